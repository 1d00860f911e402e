//! Host tests of the passthrough core on a simulated VT-d unit. (Being written.)
