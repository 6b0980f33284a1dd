//! Guest boot timing under TCG: the host TSC frequency that must be passed to the
//! guest kernel as `tsc_early_khz=`, and the kernel command line that includes it.
//! Owns the `ZYGOTE_TSC_KHZ` override; reads the host TSC and clock, nothing else.
//!
//! Why (measured, QEMU 10.0.2, microvm, Debian 6.1 cloud kernel, 2-CPU host):
//! the guest kernel learns its TSC frequency by timing the emulated i8254 PIT
//! (`quick_pit_calibrate`, then `pit_calibrate_tsc`). Under TCG the vCPU is a host
//! thread: when the host is busy the thread is preempted inside the calibration
//! window and both methods fail ("tsc: Fast TSC calibration failed", "tsc: Unable
//! to calibrate against PIT", "tsc: No reference (HPET/PMTIMER) available" — microvm
//! has neither). With `tsc_khz` unknown the kernel falls back to counting jiffies
//! in `calibrate_delay()`, and on microvm no timer tick reaches the CPU at that
//! point of boot: `jiffies` never moves and CPU 0 spins forever (RIP in
//! `calibrate_delay+0x37f`, printk timestamps frozen at 0.000000, console empty
//! with `quiet`). `lpj=` alone only moves the spin to `setup_boot_APIC_clock`
//! (the LAPIC timer calibration waits on jiffies too). Giving the frequency with
//! `tsc_early_khz=` skips every PIT calibration. Under TCG `rdtsc` returns the
//! host's TSC (QEMU `cpu_get_host_ticks`), so the value is the host's TSC rate.
//!
//! Numbers (50 consecutive boots each, full zygote command line, memfd RAM,
//! `-smp 1`, 20-60 s per-boot timeout, shared 2-CPU host):
//! * without `tsc_early_khz`: 14 of 50 reached init; all 36 hangs at
//!   `calibrate_delay+0x37f` (2 of the first 33 while the host was busy, 12 of
//!   the last 17 once it was quieter; an idle host earlier gave 50 of 50, which
//!   is why this looked like "one boot in ten").
//! * with it: 50 of 50 under the same load (p50 9.4 s, heavily loaded), 50 of 50
//!   on the quieter host (p50 3.0 s), 20 of 20 through `tests/boot_loop.rs`.
//! * not the cause: the memfd backend (hangs with anonymous RAM too), `-smp`
//!   (hangs with 1 and 2), `quiet` (hangs without it, printing the messages above).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Accel, QemuError, DEFAULT_APPEND};

/// Environment variable: the host TSC frequency in kHz, overriding the
/// measurement (e.g. `ZYGOTE_TSC_KHZ=2100000`).
pub const ENV_TSC_KHZ: &str = "ZYGOTE_TSC_KHZ";

/// Length of one measurement window.
const WINDOW: Duration = Duration::from_millis(40);
/// Windows measured; the median is taken.
const WINDOWS: usize = 5;

/// The kernel command line to boot with: [`DEFAULT_APPEND`] plus, under TCG,
/// `tsc_early_khz=<host TSC kHz>` (see the module docs for the evidence),
/// `tsc=reliable` (every vCPU thread reads the same host TSC, so with `-smp 2`
/// the guest need not demote it to `refined-jiffies` as "unsynchronized") and
/// [`TCG_ONLY_APPEND`].
pub fn default_append(accel: Accel) -> Result<String, QemuError> {
    match accel {
        Accel::Kvm => Ok(DEFAULT_APPEND.to_string()),
        Accel::Tcg => Ok(format!(
            "{DEFAULT_APPEND} tsc_early_khz={} tsc=reliable {TCG_ONLY_APPEND}",
            host_tsc_khz()?
        )),
    }
}

/// Kernel parameters that are only sound under TCG.
///
/// `mitigations=off`: the guest kernel's Spectre/Meltdown-class mitigations
/// (retpolines, RSB filling, usercopy barriers, and whatever else the `max`
/// CPU model's flags make it pick) defend against speculative execution by
/// the CPU the guest runs on. Under TCG there is none: guest instructions are
/// translated and executed by QEMU, the emulated CPU never speculates, so a
/// guest process cannot leak guest-kernel (or other guest processes') data
/// through a speculative side channel, and the mitigations only cost emulated
/// cycles on every syscall and context switch. The host side (QEMU itself on
/// the real CPU) is protected by the host kernel, which this does not touch.
/// Never under KVM, where guest code runs speculatively on the real CPU.
pub const TCG_ONLY_APPEND: &str = "mitigations=off";

/// The host TSC frequency in kHz: `$ZYGOTE_TSC_KHZ` if set, else measured once
/// per process against `CLOCK_MONOTONIC` (about 200 ms) and cached.
pub fn host_tsc_khz() -> Result<u64, QemuError> {
    static KHZ: OnceLock<Result<u64, String>> = OnceLock::new();
    KHZ.get_or_init(|| {
        if let Ok(v) = std::env::var(ENV_TSC_KHZ) {
            return match v.trim().parse::<u64>() {
                Ok(k) if k >= 1000 => Ok(k),
                _ => Err(format!(
                    "{ENV_TSC_KHZ}={v:?} is not a frequency in kHz (e.g. 2100000)"
                )),
            };
        }
        measure_tsc_khz()
    })
    .clone()
    .map_err(|detail| QemuError::TscFrequency { detail })
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects and exists on every x86_64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads (tsc, instant) with the TSC read bracketing the clock read tightly.
#[cfg(target_arch = "x86_64")]
fn sample() -> (u64, Instant) {
    let mut best = (u64::MAX, 0, Instant::now());
    for _ in 0..16 {
        let a = rdtsc();
        let t = Instant::now();
        let b = rdtsc();
        if b.wrapping_sub(a) < best.0 {
            best = (b.wrapping_sub(a), a + (b.wrapping_sub(a)) / 2, t);
        }
    }
    (best.1, best.2)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Result<u64, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    if !flags.split_whitespace().any(|f| f == "constant_tsc") {
        return Err(format!(
            "the host TSC is not constant-rate (no constant_tsc flag); set {ENV_TSC_KHZ}"
        ));
    }
    let mut khz = Vec::with_capacity(WINDOWS);
    for _ in 0..WINDOWS {
        let (c0, t0) = sample();
        std::thread::sleep(WINDOW);
        let (c1, t1) = sample();
        let ns = t1.duration_since(t0).as_nanos() as f64;
        khz.push((c1.wrapping_sub(c0) as f64) * 1e6 / ns);
    }
    khz.sort_by(f64::total_cmp);
    let median = khz[WINDOWS / 2];
    let spread = (khz[WINDOWS - 1] - khz[0]) / median;
    if !(100_000.0..20_000_000.0).contains(&median) || spread > 0.01 {
        return Err(format!(
            "TSC measurement unstable ({khz:?} kHz); set {ENV_TSC_KHZ}"
        ));
    }
    let k = median.round() as u64;
    tracing::debug!(khz = k, spread, "measured host TSC frequency");
    Ok(k)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Result<u64, String> {
    Err(format!("not an x86_64 host; set {ENV_TSC_KHZ}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_plausible_tsc_and_builds_the_append() {
        let k = host_tsc_khz().unwrap();
        assert!((100_000..20_000_000).contains(&k), "{k}");
        let tcg = default_append(Accel::Tcg).unwrap();
        assert!(tcg.starts_with(DEFAULT_APPEND));
        assert!(tcg.contains(&format!(" tsc_early_khz={k}")), "{tcg}");
        assert!(tcg.contains(" tsc=reliable "), "{tcg}");
        assert!(tcg.ends_with(TCG_ONLY_APPEND), "{tcg}");
        assert_eq!(default_append(Accel::Kvm).unwrap(), DEFAULT_APPEND);
        // Stable across calls (cached).
        assert_eq!(host_tsc_khz().unwrap(), k);
        eprintln!("host TSC: {k} kHz");
    }
}
