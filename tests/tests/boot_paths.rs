//! Every way a test box boots Lazaret, each to a success exit on the reference QEMU (10.0)
//! under TCG (issue 10): QEMU `-kernel`, BIOS iPXE over TFTP and over HTTP, GRUB from the
//! ISO on BIOS and on UEFI (OVMF), and UEFI iPXE chaining GRUB EFI. Each test boots what
//! `scripts/boot-dir` / `scripts/iso` build, and prints its wall time (`boot-path NAME: …`,
//! the closing figures of docs/test-boxes.md). A test skips, saying why, only when the
//! boot-path packages cannot be installed.
use lazaret_tests::boot_path::{boot_dir, boot_tools, iso, HttpServer};
use lazaret_tests::{run, BootPath, Config, Firmware, Outcome, Status};

/// What every path must show: the loader's protocol, where the kernel got the RSDP, the
/// boot scenario's check and the success exit.
fn check(name: &str, out: &Outcome, protocol: &str, rsdp_from: &str) {
    eprintln!("boot-path {name}: {:.1} s wall", out.wall.as_secs_f64());
    let t = out.transcript();
    assert_eq!(out.status, Status::Success, "{name}: {t}");
    assert!(
        out.line(&format!("lazaret-boot: {protocol} loader started"))
            .is_some(),
        "{name}: the loader was not entered through {protocol}: {t}"
    );
    assert!(
        out.line("acpi: RSDP at")
            .is_some_and(|l| l.contains(rsdp_from)),
        "{name}: RSDP not from {rsdp_from}: {t}"
    );
    assert!(
        out.line("RESULT boot pass").is_some(),
        "{name}: no passing boot check: {t}"
    );
    assert!(out.line("LAZARET EXIT success").is_some(), "{name}: {t}");
}

/// Boots `boot` on `firmware` with the demo machine (QEMU 10.0, Intel IOMMU, three edu).
fn boot(firmware: Firmware, boot: BootPath) -> Outcome {
    let config = Config {
        boot,
        firmware,
        ..Config::default()
    };
    run(&config, false).unwrap_or_else(|e| panic!("could not run QEMU: {e}"))
}

/// The boot-path packages, or a clear skip.
macro_rules! need_boot_tools {
    () => {
        if let Err(why) = boot_tools() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

#[test]
fn qemu_kernel() {
    let out = boot(Firmware::Bios, BootPath::Kernel);
    check("qemu-kernel", &out, "multiboot1", "BIOS-area scan");
}

#[test]
fn bios_ipxe_tftp() {
    need_boot_tools!();
    let dir = boot_dir("bios-tftp", "log=info").expect("boot directory");
    let out = boot(
        Firmware::Bios,
        BootPath::Network {
            tftp: Some(dir),
            bootfile: "boot.ipxe".into(),
        },
    );
    check("bios-ipxe-tftp", &out, "multiboot1", "BIOS-area scan");
    assert!(
        out.line("Lazaret: BIOS iPXE").is_some(),
        "{}",
        out.transcript()
    );
}

#[test]
fn bios_ipxe_http() {
    need_boot_tools!();
    let dir = boot_dir("bios-http", "log=info").expect("boot directory");
    let server = HttpServer::serve(&dir).expect("HTTP server on 127.0.0.1");
    let out = boot(
        Firmware::Bios,
        BootPath::Network {
            tftp: None,
            // QEMU's user network maps 10.0.2.2 to the host's loopback.
            bootfile: format!("http://10.0.2.2:{}/boot.ipxe", server.port),
        },
    );
    check("bios-ipxe-http", &out, "multiboot1", "BIOS-area scan");
    // The image URI iPXE puts in front of the string is not an option.
    assert!(
        out.line("cmdline: \"log=info\"").is_some(),
        "{}",
        out.transcript()
    );
    assert_eq!(
        server.requests(),
        ["/boot.ipxe", "/lazaret-boot", "/lazaret-kernel"],
        "everything came over HTTP"
    );
}

#[test]
fn grub_iso_bios() {
    need_boot_tools!();
    let image = iso("grub-bios", "log=info").expect("ISO");
    let out = boot(Firmware::Bios, BootPath::Cdrom(image));
    check("grub-iso-bios", &out, "multiboot2", "acpi_rsdp=");
}

#[test]
fn grub_iso_uefi() {
    need_boot_tools!();
    let image = iso("grub-uefi", "log=info").expect("ISO");
    let out = boot(Firmware::Uefi, BootPath::Cdrom(image));
    // OVMF has no RSDP in the BIOS area: it can only have come from GRUB's ACPI tag.
    check("grub-iso-uefi", &out, "multiboot2", "acpi_rsdp=");
}

#[test]
fn uefi_ipxe_chains_grub_efi() {
    need_boot_tools!();
    let dir = boot_dir("uefi-ipxe", "log=info").expect("boot directory");
    let out = boot(
        Firmware::Uefi,
        BootPath::Network {
            tftp: Some(dir),
            bootfile: "boot.ipxe".into(),
        },
    );
    check("uefi-ipxe-grub-efi", &out, "multiboot2", "acpi_rsdp=");
    assert!(
        out.line("chaining GRUB EFI").is_some(),
        "{}",
        out.transcript()
    );
    // The padding module GRUB EFI loads first never reaches the kernel.
    assert!(
        out.line("cmdline: \"acpi_rsdp=")
            .is_some_and(|l| l.ends_with("log=info\"")),
        "{}",
        out.transcript()
    );
}
