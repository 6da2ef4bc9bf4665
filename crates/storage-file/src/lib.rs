//! lockstep-storage-file: being written (issue 4).
