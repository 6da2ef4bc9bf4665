//! Peak resident memory of processes, from `/proc` (Linux): reset before a workload, read
//! after it.

/// Resets the peak RSS (`VmHWM`) of process `pid` to its current RSS.
pub fn reset_peak(pid: u32) {
    // Writing 5 to clear_refs resets the peak RSS (Linux 4.0 and later); where that is not
    // allowed the peak since the process started is reported instead.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Peak RSS of process `pid` in MiB, if it can be read.
pub fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_of_this_process_is_readable_and_grows_with_touched_memory() {
        let me = std::process::id();
        reset_peak(me);
        let before = peak_mib(me).expect("VmHWM");
        let block = vec![1u8; 64 << 20];
        let after = peak_mib(me).expect("VmHWM");
        assert!(block.iter().step_by(4096).all(|b| *b == 1));
        assert!(after >= before + 60.0, "{before} -> {after}");
    }
}
