//! The kernel command line: what the loader learnt (`acpi_rsdp=`), the loader's own
//! arguments, then module 0's.
//!
//! QEMU, iPXE and GRUB put the image's path or URI in front of each string
//! (`/boot/kernel log=debug`, `http://10.0.2.2:8080/lazaret-boot?v=2 log=debug`); that first
//! word is dropped when it has no `=`, starts with `/` or holds `://`. Later options win over
//! earlier ones in the kernel, so the module's string overrides the loader's, and both
//! override what the loader found.

use lazaret_rt::multiboot::without_image_path;

/// Writes the composed command line into `out` and returns its length, or `None` when it
/// does not fit (the caller reports that rather than truncating an option in half).
pub fn compose(parts: &[&[u8]], out: &mut [u8]) -> Option<usize> {
    let mut len = 0;
    for part in parts {
        for word in arguments(part) {
            let sep = usize::from(len > 0);
            let end = len + sep + word.len();
            if end > out.len() {
                return None;
            }
            if sep == 1 {
                out[len] = b' ';
            }
            out[len + sep..end].copy_from_slice(word);
            len = end;
        }
    }
    Some(len)
}

/// The whitespace-separated words of `s`, without a leading path word.
fn arguments(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut words = without_image_path(s)
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .peekable();
    // A bare file name (QEMU `-initrd kernel`, iPXE `module kernel` over some servers) is no
    // option either.
    if words.peek().is_some_and(|first| !first.contains(&b'=')) {
        words.next();
    }
    words
}

/// The string of a padding module (`lazaret-pad`, after any path word). GRUB EFI chained
/// from UEFI iPXE loads modules into low memory that is cleared before we run; the network
/// `grub.cfg` loads a padding module first to take that memory, and the loader drops it.
pub fn is_padding(module_string: &[u8]) -> bool {
    without_image_path(module_string).trim_ascii_end() == b"lazaret-pad"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(loader: &str, module: &str) -> String {
        let mut buf = [0u8; 64];
        let n = compose(&[loader.as_bytes(), module.as_bytes()], &mut buf).expect("fits");
        String::from_utf8(buf[..n].to_vec()).expect("ascii")
    }

    #[test]
    fn drops_path_words_and_joins_in_order() {
        assert_eq!(
            run("/boot/lazaret-boot.elf log=info", "kernel.elf  log=debug"),
            "log=info log=debug"
        );
        assert_eq!(
            run("", "http://10.0.2.2/k scenario=panic"),
            "scenario=panic"
        );
        assert_eq!(run("quarantine=basic", ""), "quarantine=basic");
        assert_eq!(run("", ""), "");
    }

    #[test]
    fn drops_ipxe_uris_even_with_a_query() {
        assert_eq!(
            run(
                "http://10.0.2.2:8080/lazaret-boot?v=2 log=debug",
                "tftp://10.0.2.2/k a=1"
            ),
            "log=debug a=1"
        );
        assert_eq!(run("/boot/x?y=1 log=warn", ""), "log=warn");
        // Only the first word can be the path.
        assert_eq!(run("a=1 /b", ""), "a=1 /b");
    }

    #[test]
    fn the_loaders_findings_come_first_so_the_user_overrides_them() {
        let mut buf = [0u8; 64];
        let parts: [&[u8]; 3] = [
            b"acpi_rsdp=0x7fb7e014",
            b"/lazaret-boot",
            b"k acpi_rsdp=0xf0000",
        ];
        let n = compose(&parts, &mut buf).expect("fits");
        assert_eq!(&buf[..n], b"acpi_rsdp=0x7fb7e014 acpi_rsdp=0xf0000");
    }

    #[test]
    fn padding_is_named_alone_after_an_optional_path() {
        assert!(is_padding(b"lazaret-pad"));
        assert!(!is_padding(b"(tftp)/lazaret-pad lazaret-pad"));
        assert!(is_padding(b"/boot/lazaret-pad lazaret-pad"));
        assert!(is_padding(b"tftp://10.0.2.2/x lazaret-pad"));
        assert!(!is_padding(b"lazaret-pad log=debug"));
        assert!(!is_padding(b"guest lazaret-pad"));
        assert!(!is_padding(b""));
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut buf = [0u8; 8];
        assert_eq!(compose(&[b"a=1", b"b=2222"], &mut buf), None);
        assert_eq!(compose(&[b"a=1", b"b=22"], &mut buf), Some(8));
    }
}
