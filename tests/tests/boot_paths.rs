//! Every way a test box boots Lazaret, each to a success exit on both QEMUs (10.0 and 7.2)
//! under TCG (issue 10): QEMU `-kernel`, BIOS iPXE over TFTP and over HTTP, GRUB from the
//! ISO on BIOS and on UEFI (OVMF), and UEFI iPXE chaining GRUB EFI. Each test boots what
//! `scripts/boot-dir` / `scripts/iso` build, and prints its wall time (`boot-path NAME: …`,
//! the closing figures of docs/test-boxes.md). A test skips, saying why, only when the
//! boot-path packages cannot be installed.
use lazaret_tests::boot_path::{boot_dir, boot_tools, iso, tiny_guest, HttpServer};
use lazaret_tests::{on_every_qemu, run, BootPath, Config, Firmware, Outcome, Qemu, Status};

/// What every path must show: the loader's protocol, where the kernel got the RSDP, the
/// boot scenario's check and the success exit.
fn check(name: &str, out: &Outcome, protocol: &str, rsdp_from: &str) {
    // "QEMU emulator version 10.0.2 (Debian …)": the version number alone.
    let version = out.qemu_version.split_whitespace().nth(3).unwrap_or("?");
    eprintln!(
        "boot-path {name} (QEMU {version}): {:.1} s wall",
        out.wall.as_secs_f64()
    );
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
    if name != "qemu-kernel" {
        // The guest module arrives as module 1 with its string, the path or URI dropped
        // and any padding gone, whatever the boot path.
        assert!(
            out.line("module 1: ")
                .is_some_and(|l| l.ends_with("(4 KiB) \"guest tiny mem=2M\"")),
            "{name}: guest module: {t}"
        );
        assert!(out.line("module 2: ").is_none(), "{name}: {t}");
    }
}

/// The one guest module every scripted path carries.
fn guests() -> Vec<String> {
    vec![tiny_guest().expect("guest image")]
}

/// Boots `boot` on `firmware` with the demo machine (Intel IOMMU, three edu) on `qemu`.
fn boot(qemu: Qemu, firmware: Firmware, boot: BootPath) -> Outcome {
    let config = Config {
        boot,
        firmware,
        ..Config::default().with_qemu(qemu)
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

on_every_qemu! {
    fn qemu_kernel(qemu) {
        let out = boot(qemu, Firmware::Bios, BootPath::Kernel);
        check("qemu-kernel", &out, "multiboot1", "BIOS-area scan");
    }

    fn bios_ipxe_tftp(qemu) {
        need_boot_tools!();
        let dir = boot_dir(&format!("bios-tftp-{qemu:?}"), "log=info", &guests()).expect("boot directory");
        let out = boot(
            qemu,
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

    fn bios_ipxe_http(qemu) {
        need_boot_tools!();
        let dir = boot_dir(&format!("bios-http-{qemu:?}"), "log=info", &guests()).expect("boot directory");
        let server = HttpServer::serve(&dir).expect("HTTP server on 127.0.0.1");
        let out = boot(
            qemu,
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
            ["/boot.ipxe", "/lazaret-boot", "/lazaret-kernel", "/guest-tiny"],
            "everything came over HTTP"
        );
    }

    fn grub_iso_bios(qemu) {
        need_boot_tools!();
        let image = iso(&format!("grub-bios-{qemu:?}"), "log=info", &guests()).expect("ISO");
        let out = boot(qemu, Firmware::Bios, BootPath::Cdrom(image));
        check("grub-iso-bios", &out, "multiboot2", "acpi_rsdp=");
    }

    fn grub_iso_uefi(qemu) {
        need_boot_tools!();
        let image = iso(&format!("grub-uefi-{qemu:?}"), "log=info", &guests()).expect("ISO");
        let out = boot(qemu, Firmware::Uefi, BootPath::Cdrom(image));
        // OVMF has no RSDP in the BIOS area: it can only have come from GRUB's ACPI tag.
        check("grub-iso-uefi", &out, "multiboot2", "acpi_rsdp=");
    }

    fn uefi_ipxe_chains_grub_efi(qemu) {
        need_boot_tools!();
        let dir = boot_dir(&format!("uefi-ipxe-{qemu:?}"), "log=info", &guests()).expect("boot directory");
        let out = boot(
            qemu,
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
}

/// A second serial port (COM2, 0x2f8) that QEMU writes to a file, for the console tests.
fn com2_file(name: &str) -> (std::path::PathBuf, Vec<String>) {
    let file = lazaret_tests::target_dir()
        .join("boot-tests")
        .join(format!("{name}.com2"));
    std::fs::create_dir_all(file.parent().expect("has a parent")).expect("test dir");
    let _ = std::fs::remove_file(&file);
    let args = vec!["-serial".into(), format!("file:{}", file.display())];
    (file, args)
}

#[test]
fn console_override_moves_the_kernel_to_com2() {
    let (file, extra_args) = com2_file("console-override");
    let config = Config {
        extra_args,
        ..Config::default().with_cmdline("console=com2")
    };
    let out = run(&config, false).expect("QEMU runs");
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    let com2 = std::fs::read_to_string(&file).expect("COM2 output");
    assert!(
        com2.contains("serial: 0x2f8 at 115200 baud (console=;"),
        "{com2}"
    );
    assert!(com2.contains("LAZARET EXIT success"), "{com2}");
    // COM1 has the loader's lines only: the kernel never wrote there.
    assert!(out
        .line("lazaret-boot: multiboot1 loader started")
        .is_some());
    assert!(out.line("LAZARET EXIT").is_none(), "{}", out.transcript());
}

/// The body of an SPCR table (after the 36-byte header QEMU's `-acpitable` writes) naming a
/// 16550 at I/O port `port`, baud code 7 (115200): Microsoft SPCR specification, table 1.
fn spcr_body(port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 80 - 36];
    b[0] = 0; // +36 interface type: full 16550
    b[4] = 1; // +40 GAS: system I/O
    b[5] = 8; // register bit width
    b[7] = 1; // access size: byte
    b[8..10].copy_from_slice(&port.to_le_bytes()); // +44 address
    b[16] = 1; // +52 interrupt type: dual-8259
    b[17] = 3; // +53 IRQ
    b[22] = 7; // +58 baud rate: 115200
    b[24] = 1; // +60 stop bits
    b[28..30].copy_from_slice(&0xffffu16.to_le_bytes()); // +64 PCI device ID: not PCI
    b[30..32].copy_from_slice(&0xffffu16.to_le_bytes()); // +66 PCI vendor ID
    b
}

#[test]
fn console_follows_the_spcr_table() {
    let (file, mut extra_args) = com2_file("spcr");
    let body = file.with_extension("spcr");
    std::fs::write(&body, spcr_body(0x2f8)).expect("SPCR body");
    extra_args.extend([
        "-acpitable".into(),
        format!("sig=SPCR,rev=2,data={}", body.display()),
    ]);
    let config = Config {
        extra_args,
        ..Config::default()
    };
    let out = run(&config, false).expect("QEMU runs");
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    assert!(
        out.line("serial: SPCR names 0x2f8 at 115200 baud; the console moves there")
            .is_some(),
        "{}",
        out.transcript()
    );
    let com2 = std::fs::read_to_string(&file).expect("COM2 output");
    assert!(com2.contains("per SPCR (moved from 0x3f8)"), "{com2}");
    assert!(com2.contains("LAZARET EXIT success"), "{com2}");
    assert!(out.line("LAZARET EXIT").is_none(), "{}", out.transcript());
}

#[test]
fn console_override_wins_over_spcr() {
    let (file, mut extra_args) = com2_file("spcr-override");
    let body = file.with_extension("spcr");
    std::fs::write(&body, spcr_body(0x2f8)).expect("SPCR body");
    extra_args.extend([
        "-acpitable".into(),
        format!("sig=SPCR,rev=2,data={}", body.display()),
    ]);
    let config = Config {
        extra_args,
        ..Config::default().with_cmdline("console=com1")
    };
    let out = run(&config, false).expect("QEMU runs");
    assert_eq!(out.status, Status::Success, "{}", out.transcript());
    assert!(
        out.line("LAZARET EXIT success").is_some(),
        "{}",
        out.transcript()
    );
    assert!(
        out.line("acpi: RSDP at")
            .is_some_and(|l| l.contains("SPCR")),
        "the table is there: {}",
        out.transcript()
    );
    assert!(
        out.line("serial: SPCR").is_none(),
        "but not followed: {}",
        out.transcript()
    );
}
