//! The host TSC frequency, which a TCG guest needs on its kernel command line.
//!
//! Under TCG the guest's `rdtsc` returns the host's TSC, and `-M microvm` has no
//! HPET or ACPI PM timer, so the guest kernel can only calibrate the TSC against
//! the PIT. Under TCG that calibration is timing-sensitive and often fails
//! ("tsc: Unable to calibrate against PIT ... Marking TSC unstable"), after which
//! the guest hangs silently before `/init` (the "one boot in N hangs with an
//! empty console" bug). `tsc_early_khz=<host TSC kHz>` skips the calibration.
//! This module owns measuring that value; it runs no guest.

use std::time::{Duration, Instant};

/// One measurement window.
const WINDOW: Duration = Duration::from_millis(20);

/// The host's TSC frequency in kHz, rounded to whole MHz, or `None` if the CPU
/// has no constant TSC (then the guest must calibrate on its own).
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let flags = cpuinfo.lines().find(|l| l.starts_with("flags"))?;
    if !flags.split_whitespace().any(|f| f == "constant_tsc") {
        return None;
    }
    let mut samples: Vec<u64> = (0..3).filter_map(|_| measure_once()).collect();
    samples.sort_unstable();
    let khz = *samples.get(samples.len() / 2)?;
    Some((khz + 500) / 1000 * 1000)
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` reads the time-stamp counter; it has no memory effects
    // and is available on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(target_arch = "x86_64")]
fn measure_once() -> Option<u64> {
    let t0 = Instant::now();
    let c0 = rdtsc();
    while t0.elapsed() < WINDOW {
        std::hint::spin_loop();
    }
    let c1 = rdtsc();
    let ns = t0.elapsed().as_nanos();
    let cycles = u128::from(c1.checked_sub(c0)?);
    u64::try_from(cycles * 1_000_000 / ns.max(1)).ok()
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_once() -> Option<u64> {
    None
}

/// The kernel command line for booting an image: [`crate::KERNEL_CMDLINE`],
/// plus `tsc_early_khz=` when the guest runs under TCG (see the module docs).
pub fn kernel_cmdline(tcg: bool) -> String {
    let mut s = crate::KERNEL_CMDLINE.to_string();
    if tcg {
        if let Some(khz) = host_tsc_khz() {
            s.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_plausible_frequency() {
        match host_tsc_khz() {
            Some(khz) => assert!((100_000..20_000_000).contains(&khz), "{khz} kHz"),
            None => eprintln!("skipping: host has no constant_tsc"),
        }
    }

    #[test]
    fn cmdline_has_console_and_init() {
        let c = kernel_cmdline(false);
        assert!(
            c.contains("console=ttyS0") && c.contains("rdinit=/init"),
            "{c}"
        );
        assert!(!c.contains("tsc_early_khz"));
    }
}
