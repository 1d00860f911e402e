//! DMAR (Intel VT-d spec rev 4.1, chapter 8). To be written.
