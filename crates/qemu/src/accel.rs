//! Choosing the accelerator (KVM or TCG) and the CPU model that goes with it.
//! Reads `/proc/cpuinfo`, `/dev/kvm` and `/sys/module`; decides in a pure function
//! ([`decide`]) so the policy is unit-tested without the host.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::QemuError;

/// The QEMU accelerator (`"kvm"` / `"tcg"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl FromStr for Accel {
    type Err = QemuError;

    /// "kvm" or "tcg". For user input that may say "auto", use [`parse_accel`].
    fn from_str(s: &str) -> Result<Accel, QemuError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(QemuError::InvalidAccel { value: s.into() }),
        }
    }
}

/// Parses a user's request: "kvm" / "tcg" → forced, "auto" (or "") → `None`,
/// the argument [`choose_accel`] takes.
pub fn parse_accel(s: &str) -> Result<Option<Accel>, QemuError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" | "" => Ok(None),
        _ => s.parse().map(Some),
    }
}

/// The accelerator chosen and why (printed by `zygote doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    /// The accelerator.
    pub accel: Accel,
    /// A sentence saying why.
    pub reason: String,
}

/// What the host offers for KVM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmFacts {
    /// `vmx` or `svm` is in the `/proc/cpuinfo` flags.
    pub cpu_flag: Option<&'static str>,
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// A hardware KVM module is loaded: `kvm_intel` or `kvm_amd`.
    pub hw_module: Option<&'static str>,
    /// `kvm_pvm` (paravirtual nested KVM: runs a normal guest kernel by emulation,
    /// about 1 µs per instruction) is loaded.
    pub pvm_module: bool,
}

impl KvmFacts {
    /// Reads the facts from this host.
    pub fn probe() -> KvmFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let cpu_flag = ["vmx", "svm"].into_iter().find(|f| flags.contains(f));
        let module = |m: &str| Path::new("/sys/module").join(m).exists();
        KvmFacts {
            cpu_flag,
            dev_kvm: Path::new("/dev/kvm").exists(),
            hw_module: ["kvm_intel", "kvm_amd"].into_iter().find(|m| module(m)),
            pvm_module: module("kvm_pvm"),
        }
    }

    /// Why KVM is unusable, or `None` if it is usable.
    pub fn unusable_reason(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.cpu_flag.is_none() {
            missing.push("no vmx/svm flag in /proc/cpuinfo");
        }
        if !self.dev_kvm {
            missing.push("no /dev/kvm");
        }
        if self.hw_module.is_none() {
            missing.push("neither kvm_intel nor kvm_amd is loaded");
        }
        if missing.is_empty() {
            return None;
        }
        let mut reason = missing.join(", ");
        if self.pvm_module {
            reason.push_str(
                "; /dev/kvm is kvm_pvm (paravirtual nested KVM), which runs an ordinary \
                 guest kernel instruction by instruction and does not count",
            );
        }
        Some(reason)
    }
}

/// Chooses the accelerator: `requested` if given (refusing KVM the host cannot
/// do), else KVM when usable, else TCG.
pub fn choose_accel(requested: Option<Accel>) -> Result<AccelChoice, QemuError> {
    decide(requested, &KvmFacts::probe())
}

/// The policy of [`choose_accel`] over given facts.
pub fn decide(requested: Option<Accel>, facts: &KvmFacts) -> Result<AccelChoice, QemuError> {
    let unusable = facts.unusable_reason();
    match (requested, unusable) {
        (Some(Accel::Kvm), Some(reason)) => Err(QemuError::KvmUnavailable { reason }),
        (Some(Accel::Kvm), None) => Ok(AccelChoice {
            accel: Accel::Kvm,
            reason: "kvm requested; hardware virtualisation available".into(),
        }),
        (Some(Accel::Tcg), _) => Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: "tcg requested".into(),
        }),
        (None, None) => Ok(AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "auto: {} in /proc/cpuinfo, /dev/kvm present, {} loaded",
                facts.cpu_flag.unwrap_or("?"),
                facts.hw_module.unwrap_or("?")
            ),
        }),
        (None, Some(reason)) => Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: format!("auto: KVM unusable ({reason}); using TCG"),
        }),
    }
}

/// The `-cpu` model for `accel`. Parent and children must use the identical
/// model (a `max` parent restored as `qemu64` hung silently), so the engine records
/// it in every snapshot and refuses a mismatch.
///
/// * TCG: `max` (all features TCG emulates; identical on every host running the
///   same QEMU version).
/// * KVM: `host`. A named model (e.g. `Skylake-Client`) only works on hosts of that
///   vendor and generation, and the only cross-vendor named models (`qemu64`,
///   `kvm64`) drop AVX and friends, slowing real workloads. zygote's snapshots live
///   on the host that took them (memfds held by the daemon), so `host` is stable for
///   them; what can change is the host CPU under a persisted snapshot (new machine,
///   microcode, kernel), so the engine must also record a host CPU fingerprint
///   (vendor, model, flags) with KVM snapshots and refuse a mismatch.
pub fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Tcg => "max",
        Accel::Kvm => "host",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw() -> KvmFacts {
        KvmFacts {
            cpu_flag: Some("vmx"),
            dev_kvm: true,
            hw_module: Some("kvm_intel"),
            pvm_module: false,
        }
    }

    fn pvm() -> KvmFacts {
        KvmFacts {
            cpu_flag: None,
            dev_kvm: true,
            hw_module: None,
            pvm_module: true,
        }
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("kvm".parse::<Accel>().unwrap(), Accel::Kvm);
        assert_eq!("TCG".parse::<Accel>().unwrap(), Accel::Tcg);
        assert!("auto".parse::<Accel>().is_err());
        assert_eq!(parse_accel("auto").unwrap(), None);
        assert_eq!(parse_accel("kvm").unwrap(), Some(Accel::Kvm));
        let e = parse_accel("hvf").unwrap_err().to_string();
        assert!(e.contains("\"hvf\"") && e.contains("auto"), "{e}");
        assert_eq!(Accel::Kvm.to_string(), "kvm");
        assert_eq!(Accel::Tcg.to_string(), "tcg");
    }

    #[test]
    fn auto_picks_kvm_only_with_hardware_support() {
        assert_eq!(decide(None, &hw()).unwrap().accel, Accel::Kvm);
        let c = decide(None, &pvm()).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(
            c.reason.contains("kvm_pvm") && c.reason.contains("vmx"),
            "{}",
            c.reason
        );
        let no_module = KvmFacts {
            hw_module: None,
            ..hw()
        };
        assert_eq!(decide(None, &no_module).unwrap().accel, Accel::Tcg);
        assert_eq!(
            decide(None, &KvmFacts::default()).unwrap().accel,
            Accel::Tcg
        );
    }

    #[test]
    fn forcing_kvm_without_it_is_a_clear_error() {
        let e = decide(Some(Accel::Kvm), &pvm()).unwrap_err().to_string();
        assert!(e.contains("kvm_pvm") && e.contains("--accel tcg"), "{e}");
        assert_eq!(decide(Some(Accel::Kvm), &hw()).unwrap().accel, Accel::Kvm);
        assert_eq!(decide(Some(Accel::Tcg), &hw()).unwrap().accel, Accel::Tcg);
    }

    #[test]
    fn cpu_models() {
        assert_eq!(cpu_model(Accel::Tcg), "max");
        assert_eq!(cpu_model(Accel::Kvm), "host");
    }
}
