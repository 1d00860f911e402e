//! The panic path: log the location and message, then end the run with the failure status
//! (QEMU exits; hardware halts).
use core::sync::atomic::{AtomicBool, Ordering};

use lazaret_rt::exit::{exit, ExitCode};

static PANICKING: AtomicBool = AtomicBool::new(false);

pub fn report(info: &core::panic::PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        crate::console::emergency_print(format_args!("PANIC while panicking\n"));
        exit(ExitCode::Failure);
    }
    match info.location() {
        Some(l) => crate::console::emergency_print(format_args!(
            "PANIC at {}:{}:{}: {}\n",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        )),
        None => crate::console::emergency_print(format_args!("PANIC: {}\n", info.message())),
    }
    crate::console::emergency_print(format_args!("LAZARET EXIT failure\n"));
    exit(ExitCode::Failure)
}
