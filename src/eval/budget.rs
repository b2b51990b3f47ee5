//! How much memory each evaluator cache may hold. Bounds are derived at start from what the
//! machine has (host memory available to this process, or the device's free memory) and what
//! the family needs, checked against what the user asks for, and lowered during a run when
//! the machine's available memory falls, so that the caches give way instead of growing
//! into the out-of-memory killer.
//!
//! The shares (README, "Memory"):
//! - On the CPU every cache lives in host memory. The caches take half of the memory
//!   available at start above a reserve ([`reserve`]); the other half is for the process
//!   itself (the family's mapped files, the forward pass's temporaries), the page cache and
//!   other processes. Of that: the prefix cache a half (it saves forward passes, the dearest
//!   work), the merged layers a quarter (remaking a layer costs a copy or one merge) and
//!   the activations a quarter.
//! - On CUDA the budget is the device's free memory less a tenth of its total. The source
//!   weights get the models that fit in seven eighths of it (base first, whole models: a
//!   bound between two models' sizes would be waste); what is left is split as on the CPU.
//! - A cache never gets more than everything the family can put in it: the merged layers
//!   are capped at every (layer, rule) the search space can produce; what a cap frees goes
//!   to the prefix cache.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::human::human_bytes;

/// Where the caches live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Memory {
    Host,
    Device,
}

/// What the machine has, read at start (and again during a run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Machine {
    /// Host memory this process can still take (bytes).
    pub host_available: u64,
    /// What set `host_available`: `MemAvailable`, `cgroup memory.max`, ….
    pub host_limit: String,
    /// (free, total) bytes of the device on CUDA.
    pub device: Option<(u64, u64)>,
}

/// What the family needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Needs {
    /// Each model's source tensors in their storage dtype, base first (device tiers).
    pub model_bytes: Vec<u64>,
    /// Every distinct merged layer, embedding and head the candidates can use, in the compute
    /// dtype (`None`: not known, no cap).
    pub merged_layers: Option<u64>,
}

/// Bounds the user set (bytes); `None`: derive it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requested {
    pub merged_layers: Option<u64>,
    pub prefix_cache: Option<u64>,
    pub activations: Option<u64>,
    pub sources: Option<u64>,
}

/// One cache's bound and why it is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bound {
    pub bytes: u64,
    pub why: String,
}

/// The bounds the evaluator runs with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Where the caches live, and what was available there at start.
    pub memory: Memory,
    pub available: u64,
    /// What limited `available` (`MemAvailable`, a cgroup limit, the device's free memory).
    pub limit: String,
    /// Kept free while the caches fill (see [`reserve`]).
    pub reserve: u64,
    /// The part of the memory above the reserve the caches may take (1/2 on the host).
    pub share: f64,
    pub merged_layers: Bound,
    pub prefix_cache: Bound,
    pub activations: Bound,
    /// Device-tier source tensors (0 on the CPU: the mapped files already are host memory).
    pub sources: Bound,
}

/// User-set bounds over what the machine has: refused at start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the memory bounds asked for exceed what this machine has: {available} available ({limit}), asked {asked}")]
pub struct OverBudget {
    pub available: String,
    pub limit: String,
    pub asked: String,
}

/// The caches' shares of the host budget: merged layers, prefix cache, activations.
pub const SHARES: [f64; 3] = [0.25, 0.5, 0.25];
/// The part of the host memory above the reserve the caches take.
pub const HOST_SHARE: f64 = 0.5;
/// On CUDA: the device memory kept free (a tenth of the total), and the part of the rest
/// left to the other caches however large the family's sources are.
pub const DEVICE_HEADROOM: f64 = 0.1;
pub const DEVICE_OTHERS_MIN: f64 = 1.0 / 8.0;

/// Memory the caches never take, even when full: a tenth of what is available at start,
/// at least 64 MiB and at most 2 GiB. When the machine's available memory falls below it,
/// the caches evict (see [`Watch`]).
pub fn reserve(available: u64) -> u64 {
    (available / 10).clamp(64 << 20, 2 << 30).min(available)
}

/// The bounds for `machine`, `needs` and what the user set. On the host the user-set bounds
/// together may not exceed the available memory; on a device, its free memory less the
/// headroom.
pub fn derive(memory: Memory, machine: &Machine, needs: &Needs, req: &Requested) -> Result<MemoryPlan, OverBudget> {
    let (available, limit, budget, sources) = match (memory, machine.device) {
        (Memory::Device, Some((free, total))) => {
            let budget = free.saturating_sub((total as f64 * DEVICE_HEADROOM) as u64);
            let sources = match req.sources {
                Some(b) => Bound { bytes: b, why: "--sources-mb".into() },
                None => device_sources(budget, &needs.model_bytes),
            };
            (
                budget,
                format!("free device memory {} of {} less a tenth", human_bytes(free), human_bytes(total)),
                budget.saturating_sub(sources.bytes),
                sources,
            )
        }
        _ => {
            let a = machine.host_available;
            let sources = Bound { bytes: req.sources.unwrap_or(0), why: "the CPU reads the mapped files".into() };
            let budget = ((a - reserve(a)) as f64 * HOST_SHARE) as u64;
            (a, machine.host_limit.clone(), budget, sources)
        }
    };
    let asked = [
        ("--weight-cache-mb", req.merged_layers),
        ("--prefix-cache-mb", req.prefix_cache),
        ("--state-mb", req.activations),
        ("--sources-mb", if memory == Memory::Device { req.sources } else { None }),
    ];
    let asked_total: u64 = asked.iter().filter_map(|(_, b)| *b).sum();
    if asked_total > available {
        let each: Vec<String> = asked.iter().filter_map(|(flag, b)| b.map(|b| format!("{flag} {}", human_bytes(b)))).collect();
        return Err(OverBudget {
            available: human_bytes(available),
            limit,
            asked: format!("{} ({} in all)", each.join(", "), human_bytes(asked_total)),
        });
    }
    // Derived caches share what the user-set ones leave, by their relative shares.
    let user = [req.merged_layers, req.prefix_cache, req.activations];
    let left = budget.saturating_sub(user.iter().flatten().sum());
    let open: f64 = SHARES.iter().zip(&user).filter(|(_, u)| u.is_none()).map(|(s, _)| s).sum();
    let share = |i: usize| if open > 0.0 { (left as f64 * SHARES[i] / open) as u64 } else { 0 };
    let whose = match memory {
        Memory::Device => "of the device memory left",
        Memory::Host => "of half the available memory",
    };
    let pct = |i: usize| (100.0 * SHARES[i] / open.max(f64::MIN_POSITIVE)).round();
    let mut merged = match req.merged_layers {
        Some(b) => Bound { bytes: b, why: "--weight-cache-mb".into() },
        None => Bound { bytes: share(0), why: format!("{}% {whose}", pct(0)) },
    };
    let mut freed = 0;
    if let (None, Some(cap)) = (req.merged_layers, needs.merged_layers) {
        if cap < merged.bytes {
            freed = merged.bytes - cap;
            merged = Bound { bytes: cap, why: "every layer the search space can produce".into() };
        }
    }
    let prefix = match req.prefix_cache {
        Some(b) => Bound { bytes: b, why: "--prefix-cache-mb".into() },
        None if freed > 0 => Bound { bytes: share(1) + freed, why: format!("{}% {whose}, and what the merged layers do not need", pct(1)) },
        None => Bound { bytes: share(1), why: format!("{}% {whose}", pct(1)) },
    };
    let activations = match req.activations {
        Some(b) => Bound { bytes: b, why: "--state-mb".into() },
        None => Bound { bytes: share(2), why: format!("{}% {whose}", pct(2)) },
    };
    let reserve = match memory {
        Memory::Host => reserve(available),
        Memory::Device => 0,
    };
    let share = if memory == Memory::Host { HOST_SHARE } else { 1.0 };
    Ok(MemoryPlan { memory, available, limit, reserve, share, merged_layers: merged, prefix_cache: prefix, activations, sources })
}

/// Device-tier sources: whole models, base first, while they fit in all but
/// [`DEVICE_OTHERS_MIN`] of the budget.
fn device_sources(budget: u64, model_bytes: &[u64]) -> Bound {
    let room = budget - (budget as f64 * DEVICE_OTHERS_MIN) as u64;
    let tiers = super::tiers::assign(model_bytes, room);
    let placed: u64 = model_bytes.iter().zip(&tiers).filter(|(_, t)| **t == super::tiers::Tier::Device).map(|(b, _)| b).sum();
    let n = tiers.iter().filter(|t| **t == super::tiers::Tier::Device).count();
    Bound { bytes: placed, why: format!("{n} of {} models fit in 7/8 of the device memory left", model_bytes.len()) }
}

impl MemoryPlan {
    /// The bounds in the order the watch and the summary use: merged layers, prefix cache,
    /// activations.
    pub fn cache_bounds(&self) -> [u64; 3] {
        [self.merged_layers.bytes, self.prefix_cache.bytes, self.activations.bytes]
    }

    /// A few lines for `--dry-run` and the start of a search.
    pub fn render(&self) -> String {
        let where_ = match self.memory {
            Memory::Host => "host memory",
            Memory::Device => "device memory",
        };
        let mut s = format!("memory plan ({where_}, {} available: {}):\n", human_bytes(self.available), self.limit);
        let line = |name: &str, b: &Bound| format!("    {name:<15} {:>10}  {}\n", human_bytes(b.bytes), b.why);
        s += &line("merged layers", &self.merged_layers);
        s += &line("prefix cache", &self.prefix_cache);
        s += &line("activations", &self.activations);
        if self.memory == Memory::Device || self.sources.bytes > 0 {
            s += &line("source weights", &self.sources);
        }
        s
    }
}

/// The host memory planned for where none can be read: caches of 16 GiB in all.
pub const UNKNOWN_HOST_BYTES: u64 = 34 << 30;

/// Reads what the machine has: `/proc` and `/sys/fs/cgroup` under `root` (`/`; tests give
/// a folder that looks like them).
#[derive(Debug, Clone)]
pub struct HostReader {
    root: PathBuf,
}

impl Default for HostReader {
    fn default() -> Self {
        Self { root: PathBuf::from("/") }
    }
}

impl HostReader {
    #[cfg(test)]
    fn at(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).ok()
    }

    /// Host memory this process can still take, and what limits it: the kernel's
    /// MemAvailable, lowered by the cgroup's limit (v2 memory.max or v1 limit_in_bytes, of
    /// this process's cgroup and its ancestors) less its usage, and by an address-space
    /// limit (`prlimit --as`, `ulimit -v`) less the address space in use. The description
    /// names the tightest first, then the others with what each leaves free.
    pub fn available(&self) -> (u64, String) {
        let mut found: Vec<(u64, String)> = Vec::new();
        if let Some(kb) = self.read("/proc/meminfo").and_then(|t| field_kb(&t, "MemAvailable:")) {
            found.push((kb << 10, "MemAvailable".into()));
        }
        if let Some((free, limit)) = self.cgroup_free() {
            found.push((free, format!("cgroup limit {}", human_bytes(limit))));
        }
        if let Some((free, limit)) = self.address_space_free() {
            found.push((free, format!("address-space limit {}", human_bytes(limit))));
        }
        found.sort_by_key(|(b, _)| *b);
        let Some((tightest, what)) = found.first().cloned() else {
            // No /proc (not Linux): plan as the fixed bounds of old did (8 + 4 + 4 GiB).
            return (UNKNOWN_HOST_BYTES, "assumed: no /proc/meminfo to read".into());
        };
        let others: Vec<String> = found[1..].iter().map(|(b, w)| format!("; {w}: {} free", human_bytes(*b))).collect();
        (tightest, format!("{what}{}", others.concat()))
    }

    /// (limit − usage, limit) of the tightest memory cgroup above this process.
    fn cgroup_free(&self) -> Option<(u64, u64)> {
        let groups = self.read("/proc/self/cgroup")?;
        let mut best: Option<(u64, u64)> = None;
        for line in groups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let (dir, limit_file, usage_file, inactive) = if controllers.is_empty() {
                ("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file ")
            } else if controllers.split(',').any(|c| c == "memory") {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file ")
            } else {
                continue;
            };
            // The process's group and every ancestor up to the mount's root (a namespaced
            // container sees its own group as the root).
            let mut p = Path::new(path).to_path_buf();
            loop {
                let d = Path::new(dir).join(p.strip_prefix("/").unwrap_or(&p));
                let d = d.to_string_lossy();
                let limit = self.read(&format!("{d}/{limit_file}")).and_then(|t| t.trim().parse::<u64>().ok());
                let usage = self.read(&format!("{d}/{usage_file}")).and_then(|t| t.trim().parse::<u64>().ok());
                if let (Some(limit), Some(usage)) = (limit, usage) {
                    // v1 says "no limit" with a number near 2^63.
                    if limit < 1 << 60 {
                        // Inactive page cache is reclaimed before the limit bites.
                        let cache = self.read(&format!("{d}/memory.stat")).and_then(|t| field_kb(&t, inactive)).unwrap_or(0);
                        let free = limit.saturating_sub(usage.saturating_sub(cache));
                        if best.is_none_or(|(f, _)| free < f) {
                            best = Some((free, limit));
                        }
                    }
                }
                if !p.pop() {
                    break;
                }
            }
        }
        best
    }

    /// (limit − address space in use, limit) under an address-space limit.
    fn address_space_free(&self) -> Option<(u64, u64)> {
        let limits = self.read("/proc/self/limits")?;
        let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
        let limit: u64 = line["Max address space".len()..].split_whitespace().next()?.parse().ok()?;
        let used = self.read("/proc/self/status").and_then(|t| field_kb(&t, "VmSize:")).unwrap_or(0) << 10;
        Some((limit.saturating_sub(used), limit))
    }
}

/// The number after `key` in a `key value [kB]` listing (/proc/meminfo, memory.stat), as is
/// (the caller knows the unit: kB in /proc, bytes in memory.stat).
fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)).and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Lowers the caches' bounds while the run goes on when the machine's available memory falls
/// (another process starts), and raises them back (never above the plan) when it returns.
///
/// With `A` available now, the caches may still grow by `share × (A − reserve)`: as long as
/// their combined growth to the plan fits in it, the plan holds (the caches' own growth never
/// lowers it: each byte they take is counted once in what they hold and once as missing from
/// `A`, and the share is at most 1). Otherwise each cache's growth is scaled down alike; when
/// `A` is under the reserve, each cache gives back its part of the shortfall (evicting its
/// least recently used entries).
#[derive(Debug, Clone)]
pub struct Watch {
    plan: [u64; 3],
    share: f64,
    reserve: u64,
    /// Lowest bound each cache ran with.
    pub lowest: [u64; 3],
    /// Times the bounds were lowered.
    pub lowered: u64,
}

impl Watch {
    pub fn new(plan: &MemoryPlan) -> Self {
        let b = plan.cache_bounds();
        Self { plan: b, share: plan.share, reserve: plan.reserve, lowest: b, lowered: 0 }
    }

    /// The bounds for `available` bytes free now, given what each cache holds.
    pub fn bounds(&mut self, available: u64, held: [u64; 3]) -> [u64; 3] {
        let held: [u64; 3] = std::array::from_fn(|i| held[i].min(self.plan[i]));
        let growth: u64 = (0..3).map(|i| self.plan[i] - held[i]).sum();
        let out = if available >= self.reserve {
            let room = (self.share * (available - self.reserve) as f64) as u64;
            if growth <= room {
                self.plan
            } else {
                let s = room as f64 / growth as f64;
                std::array::from_fn(|i| held[i] + (s * (self.plan[i] - held[i]) as f64) as u64)
            }
        } else {
            let short = self.reserve - available;
            let total: u64 = held.iter().sum::<u64>().max(1);
            std::array::from_fn(|i| held[i].saturating_sub((short as f64 * held[i] as f64 / total as f64).ceil() as u64))
        };
        if (0..3).any(|i| out[i] < self.plan[i]) {
            self.lowered += 1;
        }
        for (lowest, b) in self.lowest.iter_mut().zip(out) {
            *lowest = (*lowest).min(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    fn host(available: u64) -> Machine {
        Machine { host_available: available, host_limit: "MemAvailable".into(), device: None }
    }

    fn gpu(total: u64) -> Machine {
        // A fresh GPU: the context takes about half a gigabyte.
        Machine { host_available: 64 * GB, host_limit: "MemAvailable".into(), device: Some((total - GB / 2, total)) }
    }

    /// The bench family (SmolLM2-135M base + 3 siblings, task arithmetic): far more merges
    /// than any machine holds, so no cap; 538 MB a model in f32, 269 MB in bf16.
    fn bench_family(bytes_per_param: u64) -> Needs {
        Needs { model_bytes: vec![134_515_008 * bytes_per_param; 4], merged_layers: None }
    }

    fn gib(b: u64) -> String {
        format!("{:.2}", b as f64 / (1u64 << 30) as f64)
    }

    fn bounds(p: &MemoryPlan) -> Vec<String> {
        [p.merged_layers.bytes, p.prefix_cache.bytes, p.activations.bytes, p.sources.bytes].into_iter().map(gib).collect()
    }

    #[test]
    fn defaults_on_8_24_and_512_gb_hosts_and_80_and_141_gb_gpus() {
        let none = Requested::default();
        let row =
            |label: &str, memory, m: &Machine, needs: &Needs| format!("{label}: {}", bounds(&derive(memory, m, needs, &none).unwrap()).join(" "));
        // GiB: merged layers, prefix cache, activations, sources. The bench family on the CPU
        // (f32) and on GPUs (bf16: all four models resident); a Llama-2-13B family of four
        // in bf16 (26.0 GB a model): two fit an 80 GB GPU, all four a 141 GB one.
        let big = Needs { model_bytes: vec![26_031_728_640; 4], merged_layers: None };
        let table = [
            row("8 GB", Memory::Host, &host(8 * GB), &bench_family(4)),
            row("24 GB", Memory::Host, &host(24 * GB), &bench_family(4)),
            row("512 GB", Memory::Host, &host(512 * GB), &bench_family(4)),
            row("80 GB GPU", Memory::Device, &gpu(80 * GB), &bench_family(2)),
            row("141 GB GPU", Memory::Device, &gpu(141 * GB), &bench_family(2)),
            row("80 GB GPU, 13B", Memory::Device, &gpu(80 * GB), &big),
            row("141 GB GPU, 13B", Memory::Device, &gpu(141 * GB), &big),
        ];
        assert_eq!(
            table.join("\n"),
            "8 GB: 0.84 1.68 0.84 0.00\n\
             24 GB: 2.54 5.09 2.54 0.00\n\
             512 GB: 59.35 118.71 59.35 0.00\n\
             80 GB GPU: 16.40 32.79 16.40 1.00\n\
             141 GB GPU: 29.18 58.36 29.18 1.00\n\
             80 GB GPU, 13B: 4.53 9.05 4.53 48.49\n\
             141 GB GPU, 13B: 5.19 10.37 5.19 96.98"
        );
    }

    #[test]
    fn a_cap_from_the_family_goes_to_the_prefix_cache_and_user_bounds_are_kept() {
        let needs = Needs { model_bytes: vec![GB; 2], merged_layers: Some(GB) };
        let p = derive(Memory::Host, &host(24 * GB), &needs, &Requested::default()).unwrap();
        assert_eq!(p.merged_layers.bytes, GB);
        assert!(p.merged_layers.why.contains("search space"), "{}", p.merged_layers.why);
        let sum = p.prefix_cache.bytes + p.merged_layers.bytes + p.activations.bytes;
        assert!(sum.abs_diff((24 * GB - (2 << 30)) / 2) <= 2, "{sum}");
        // A user-set bound is kept; the derived ones share the rest by their shares.
        let req = Requested { prefix_cache: Some(1 << 30), ..Requested::default() };
        let p = derive(Memory::Host, &host(24 * GB), &bench_family(4), &req).unwrap();
        assert_eq!(p.prefix_cache, Bound { bytes: 1 << 30, why: "--prefix-cache-mb".into() });
        assert_eq!(p.merged_layers.bytes, p.activations.bytes);
        assert_eq!(p.merged_layers.why, "50% of half the available memory");
    }

    #[test]
    fn bounds_over_what_is_available_are_refused_with_one_line() {
        let req = Requested { merged_layers: Some(8 << 30), prefix_cache: Some(4 << 30), activations: Some(4 << 30), sources: None };
        let e = derive(Memory::Host, &host(7 * GB), &bench_family(4), &req).unwrap_err().to_string();
        assert_eq!(
            e,
            "the memory bounds asked for exceed what this machine has: 6.5 GiB available (MemAvailable), asked \
             --weight-cache-mb 8.0 GiB, --prefix-cache-mb 4.0 GiB, --state-mb 4.0 GiB (16.0 GiB in all)"
        );
        assert!(!e.contains('\n'));
        assert!(derive(Memory::Host, &host(18 * GB), &bench_family(4), &req).is_ok());
    }

    #[test]
    fn the_watch_keeps_the_plan_while_the_caches_fill_and_gives_way_to_other_processes() {
        let p = derive(Memory::Host, &host(24 * GB), &bench_family(4), &Requested::default()).unwrap();
        let plan = p.cache_bounds();
        let total: u64 = plan.iter().sum();
        let a0 = p.available;
        let mut w = Watch::new(&p);
        // Our own growth: however full, the plan holds.
        for f in [0.0, 0.3, 0.7, 1.0] {
            let held: [u64; 3] = std::array::from_fn(|i| (plan[i] as f64 * f) as u64);
            assert_eq!(w.bounds(a0 - held.iter().sum::<u64>(), held), plan, "at {f}");
        }
        assert_eq!(w.lowered, 0);
        // Another process takes 8 GB while the caches are empty: their growth shrinks.
        let b = w.bounds(a0 - 8 * GB, [0; 3]);
        assert!(b.iter().zip(&plan).all(|(b, p)| b < p), "{b:?}");
        assert!(b.iter().sum::<u64>() <= ((a0 - 8 * GB - p.reserve) as f64 * 0.5) as u64);
        // Full caches and the machine under the reserve: they give back the shortfall.
        let short = GB;
        let b = w.bounds(p.reserve - short, plan);
        assert!(total - b.iter().sum::<u64>() >= short && total - b.iter().sum::<u64>() < short + 4, "{b:?}");
        // Memory back: the plan again.
        assert_eq!(w.bounds(a0, [0; 3]), plan);
        assert_eq!(w.lowered, 2);
        assert!(w.lowest[1] < plan[1]);
    }

    #[test]
    fn reads_meminfo_cgroups_and_the_address_space_limit() {
        let dir = tempfile::tempdir().unwrap();
        let put = |p: &str, text: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        put("proc/meminfo", "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n");
        let r = HostReader::at(dir.path());
        assert_eq!(r.available(), (20_000_000 << 10, "MemAvailable".to_string()));
        // cgroup v2: a parent's limit is tighter than the group's own "max".
        put("proc/self/cgroup", "0::/job/step\n");
        put("sys/fs/cgroup/job/step/memory.max", "max\n");
        put("sys/fs/cgroup/job/step/memory.current", "100\n");
        put("sys/fs/cgroup/job/memory.max", "8589934592\n");
        put("sys/fs/cgroup/job/memory.current", "3221225472\n");
        put("sys/fs/cgroup/job/memory.stat", "anon 2147483648\ninactive_file 1073741824\n");
        assert_eq!(r.available(), (6 << 30, "cgroup limit 8.0 GiB; MemAvailable: 19.1 GiB free".to_string()));
        // cgroup v1 ("no limit" is a number near 2^63).
        put("proc/self/cgroup", "4:memory:/a\n1:cpu:/\n");
        put("sys/fs/cgroup/memory/a/memory.limit_in_bytes", "9223372036854771712\n");
        put("sys/fs/cgroup/memory/a/memory.usage_in_bytes", "1\n");
        put("sys/fs/cgroup/memory/memory.limit_in_bytes", "4294967296\n");
        put("sys/fs/cgroup/memory/memory.usage_in_bytes", "1073741824\n");
        assert_eq!(r.available(), (3 << 30, "cgroup limit 4.0 GiB; MemAvailable: 19.1 GiB free".to_string()));
        // An address-space limit, less what is mapped already.
        put("proc/self/limits", "Limit                     Soft Limit           Hard Limit           Units\nMax address space         2147483648           unlimited            bytes\n");
        put("proc/self/status", "Name:\thf-tailor\nVmSize:\t  1048576 kB\n");
        let both = "address-space limit 2.0 GiB; cgroup limit 4.0 GiB: 3.0 GiB free; MemAvailable: 19.1 GiB free";
        assert_eq!(r.available(), (1 << 30, both.to_string()));
    }
}
