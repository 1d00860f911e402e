//! `lazaret-preflight [--json] [FILE...]`: see the library ([`lazaret_preflight`]) and
//! docs/test-boxes.md.
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = lazaret_preflight::run(
        &args,
        Path::new(lazaret_preflight::input::SYSFS_TABLES),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(status);
}
