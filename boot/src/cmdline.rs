//! The kernel command line: the loader's own arguments, then module 0's.
//!
//! QEMU, iPXE and GRUB put the image's path or URI in front of each string
//! (`/boot/kernel log=debug`); a first word without `=` is that path and is dropped. Later
//! options win over earlier ones in the kernel, so the module's string overrides the loader's.

/// Writes the composed command line into `out` and returns its length, or `None` when it
/// does not fit (the caller reports that rather than truncating an option in half).
pub fn compose(loader: &[u8], module: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut len = 0;
    for part in [loader, module] {
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
    let mut words = s
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .peekable();
    if words.peek().is_some_and(|first| !first.contains(&b'=')) {
        words.next();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(loader: &str, module: &str) -> String {
        let mut buf = [0u8; 64];
        let n = compose(loader.as_bytes(), module.as_bytes(), &mut buf).expect("fits");
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
    fn refuses_what_does_not_fit() {
        let mut buf = [0u8; 8];
        assert_eq!(compose(b"a=1", b"b=2222", &mut buf), None);
        assert_eq!(compose(b"a=1", b"b=22", &mut buf), Some(8));
    }
}
