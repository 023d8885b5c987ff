//! A seeded, deterministic mutation fuzzer over the GGUF headers of both test models.
//!
//! Every case mutates one header (one to three field overwrites that keep the file's length,
//! or a truncation / appended bytes), writes the mutant to a temporary file and runs
//! `hypura plan` or `hypura run` on it, two at a time. Hostile input must get exactly one
//! `hypura: error:` line (short, no control characters, naming the file) and a non-zero exit —
//! or a zero exit when the mutant is harmless — and never a signal, a panic or a hang.
//! All failures are collected and reported together at the end (grouped into classes, with
//! the mutation, the outcome, the stderr tail and the kept mutant file).
//!
//! Knobs: `HYPURA_FUZZ_SEED` (default 0x4859505552410001), `HYPURA_FUZZ_PLAN_CASES` (1000),
//! `HYPURA_FUZZ_RUN_CASES` (200), `HYPURA_FUZZ_ONLY=plan:N` or `run:N` (one case, its file
//! kept), `HYPURA_FUZZ_KEEP_MB` (disk budget for kept failing mutants, 4096),
//! `HYPURA_FUZZ_AS_LIMIT_MB` (address-space cap per child, 65536; 0 = none: a safety net
//! against a header that makes a child reserve without bound; on the 23 GiB development box it
//! changes no outcome, since the kernel already refuses any single allocation above the RAM),
//! `HYPURA_FUZZ_BACKTRACE=1` (let ggml run gdb for a backtrace on abort; off by default:
//! `GGML_NO_BACKTRACE=1` is set for the children, which only makes aborts faster). The
//! children also get `RUST_BACKTRACE=0` (a panic still prints "panicked at FILE:LINE").
//!
//! Each case's mutation comes from its own seed (derived from the base seed, the stream and the
//! index), so `HYPURA_FUZZ_ONLY` reproduces one case exactly. Timeouts: 20 s for `plan`, 60 s
//! for `run` (the child is killed and the case recorded as a hang). `run` cases are chosen by
//! screening candidates with `plan`: per model about 85% that plan accepted, 15% that it
//! rejected with an error (a candidate that crashed or hung `plan` is reported there only).
//!
//! Run: `cargo test --release -p hypura-cli --test fuzz -- --nocapture`

mod common;
#[path = "fuzz/gguf_walk.rs"]
mod gguf_walk;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/mutate.rs"]
mod mutate;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{model, GEMMA3, SMOLLM2};
use gguf_walk::{tensor_bytes, walk_file, Kind, Layout};
use harness::{abort_lines, printable, problems, run_hypura, Outcome, Status};
use hypura_core::families::FAMILIES;
use mutate::{case_seed, mutate, Rng};

const DEFAULT_SEED: u64 = 0x4859_5055_5241_0001;
const TAG_PLAN: u64 = 1;
const TAG_RUN: u64 = 2;
const TAG_MODE: u64 = 3;
const PLAN_TIMEOUT: Duration = Duration::from_secs(20);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const WORKERS: usize = 2;

struct Model {
    tag: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
    layout: Layout,
}

fn load(name: &str, tag: &'static str) -> Model {
    let path = model(name);
    let (bytes, layout) = walk_file(&path);
    Model {
        tag,
        path,
        bytes,
        layout,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

struct Config {
    seed: u64,
    plan_cases: usize,
    run_cases: usize,
    /// ("plan" | "run", index): run only this case.
    only: Option<(String, usize)>,
    keep_bytes: u64,
    as_limit: u64,
    backtrace: bool,
}

impl Config {
    fn from_env() -> Self {
        let only = std::env::var("HYPURA_FUZZ_ONLY").ok().map(|v| {
            let (kind, i) = v
                .split_once(':')
                .unwrap_or_else(|| panic!("HYPURA_FUZZ_ONLY={v}: use plan:N or run:N"));
            assert!(
                kind == "plan" || kind == "run",
                "HYPURA_FUZZ_ONLY={v}: use plan:N or run:N"
            );
            (kind.to_string(), i.parse().expect("HYPURA_FUZZ_ONLY index"))
        });
        Config {
            seed: env_u64("HYPURA_FUZZ_SEED", DEFAULT_SEED),
            plan_cases: env_u64("HYPURA_FUZZ_PLAN_CASES", 1000) as usize,
            run_cases: env_u64("HYPURA_FUZZ_RUN_CASES", 200) as usize,
            only,
            keep_bytes: env_u64("HYPURA_FUZZ_KEEP_MB", 4096) << 20,
            as_limit: env_u64("HYPURA_FUZZ_AS_LIMIT_MB", 65536) << 20,
            backtrace: std::env::var("HYPURA_FUZZ_BACKTRACE").is_ok_and(|v| v == "1"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Plan,
    /// `plan` on a candidate for a `run` case (to prefer mutants that plan accepts).
    Screen,
    Run,
}

#[derive(Clone, Debug)]
struct Case {
    cmd: Cmd,
    /// The case index in its stream (plan cases; run candidates): model = index % models.
    index: usize,
    model: usize,
    case_seed: u64,
    /// `run`: the budget arguments.
    budget: Vec<&'static str>,
    /// `run`: `plan` accepted this mutant, so llama.cpp must accept it too.
    plan_accepted: bool,
}

impl Case {
    fn plan(seed: u64, index: usize, n_models: usize) -> Self {
        Case {
            cmd: Cmd::Plan,
            index,
            model: index % n_models,
            case_seed: case_seed(seed, TAG_PLAN, index as u64),
            budget: vec!["--weights-budget", "50%"],
            plan_accepted: false,
        }
    }

    fn run(seed: u64, index: usize, cmd: Cmd, n_models: usize) -> Self {
        let mut mode = Rng::new(case_seed(seed, TAG_MODE, index as u64));
        let budget = match mode.below(100) {
            0..=9 => vec!["--baseline"],
            10..=24 => vec!["--weights-budget", "10%"],
            _ => vec!["--weights-budget", "50%"],
        };
        Case {
            cmd,
            index,
            model: index % n_models,
            case_seed: case_seed(seed, TAG_RUN, index as u64),
            budget: if cmd == Cmd::Screen {
                vec!["--weights-budget", "50%"]
            } else {
                budget
            },
            plan_accepted: false,
        }
    }

    fn label(&self) -> String {
        match self.cmd {
            Cmd::Plan => format!("plan#{}", self.index),
            Cmd::Screen => format!("plan(screen of run#{})", self.index),
            Cmd::Run => format!("run#{}", self.index),
        }
    }

    fn reproduce(&self, seed: u64) -> String {
        let only = match self.cmd {
            Cmd::Plan => format!("plan:{}", self.index),
            Cmd::Screen | Cmd::Run => format!("run:{}", self.index),
        };
        format!("HYPURA_FUZZ_SEED={seed:#x} HYPURA_FUZZ_ONLY={only}")
    }

    fn args(&self, path: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = match self.cmd {
            Cmd::Plan | Cmd::Screen => vec!["plan".into(), "--model".into(), path.into()],
            Cmd::Run => ["run", "--model"]
                .iter()
                .map(OsString::from)
                .chain([path.into()])
                .chain(
                    [
                        "--prompt",
                        "hi",
                        "--max-tokens",
                        "2",
                        "--ctx",
                        "64",
                        "--threads",
                        "1",
                    ]
                    .iter()
                    .map(OsString::from),
                )
                .collect(),
        };
        a.extend(["--disk-gbps", "1"].iter().map(OsString::from));
        a.extend(self.budget.iter().map(OsString::from));
        a
    }
}

struct Failure {
    label: String,
    model: &'static str,
    case_seed: u64,
    reproduce: String,
    mutation: String,
    command: String,
    outcome: String,
    problems: Vec<String>,
    error_lines: Vec<String>,
    abort: Vec<String>,
    tail: Vec<String>,
    file: String,
    leaked: Vec<PathBuf>,
    signature: String,
}

#[derive(Default)]
struct Counters {
    cases: BTreeMap<&'static str, usize>,
    exit0: BTreeMap<&'static str, usize>,
    errors: BTreeMap<&'static str, usize>,
    leaked: usize,
    /// Normalized error lines seen (what hypura says about mutants), by count.
    messages: BTreeMap<String, usize>,
}

struct Fuzz<'a> {
    cfg: &'a Config,
    models: &'a [Model],
    kept_bytes: AtomicU64,
    failures: Mutex<Vec<Failure>>,
    counters: Mutex<Counters>,
    env: Vec<(&'static str, &'static str)>,
}

/// `s` with the mutant's path replaced by `<F>`, numbers (and sizes: `1.5 MiB`) by `#`, and
/// quoted names (`'blk.3.attn_q.weight'`) by `'…'`, cut to `max`: one form per failure class.
fn normalize(s: &str, path: &Path, max: usize) -> String {
    let s = s.replace(&*path.to_string_lossy(), "<F>");
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push_str(if quoted { "'…" } else { "'" });
        } else if quoted {
            continue;
        } else if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_digit() || *d == '.')
            {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    for unit in [" B", " KiB", " MiB", " GiB", " TiB"] {
        out = out.replace(&format!("#{unit}"), "#<size>");
    }
    printable(out.as_bytes(), max)
}

/// Why a process aborted, in a form that is the same for every case of one class.
fn abort_reason(out: &Outcome, path: &Path) -> String {
    let lines = abort_lines(out);
    let keys = [
        "GGML_ASSERT",
        "GGML_ABORT",
        "what():",
        "terminate called",
        "memory allocation of",
        "stack overflow",
        "panicked at",
        "llama.cpp/",
    ];
    for key in keys {
        if let Some(l) = lines.iter().find(|l| l.contains(key)) {
            // Keep the source file's name and line, drop the build directory.
            let l = match l.find("llama.cpp/") {
                Some(i) => &l[i + "llama.cpp/".len()..],
                None => l.as_str(),
            };
            return if key == "memory allocation of" {
                normalize(l, path, 200)
            } else {
                printable(l.as_bytes(), 200)
            };
        }
    }
    match out.stderr_tail(1).first() {
        Some(l) => normalize(l, path, 160),
        None => "(no stderr)".to_string(),
    }
}

fn signature(cmd: Cmd, out: &Outcome, probs: &[String], path: &Path) -> String {
    let cmd = match cmd {
        Cmd::Plan | Cmd::Screen => "plan",
        Cmd::Run => "run",
    };
    let error = out
        .error_lines()
        .first()
        .map(|e| normalize(&String::from_utf8_lossy(e), path, 110))
        .unwrap_or_default();
    let parts: Vec<String> = probs
        .iter()
        .map(|p| {
            if p.starts_with("killed by signal") {
                format!("{p} | {}", abort_reason(out, path))
            } else if p.starts_with("hang") {
                "hang (killed at the timeout)".to_string()
            } else if p.starts_with("Rust panic") {
                normalize(p, path, 200)
            } else {
                format!("{} — «{error}»", normalize(p, path, 80))
            }
        })
        .collect();
    format!("{cmd}: {}", parts.join(" + "))
}

impl Fuzz<'_> {
    /// Runs one case; returns how hypura ended.
    fn execute(&self, case: &Case) -> Status {
        let m = &self.models[case.model];
        let mut rng = Rng::new(case.case_seed);
        let ops = match case.cmd {
            Cmd::Plan => mutate::OPS,
            Cmd::Screen | Cmd::Run => mutate::RUN_OPS,
        };
        let mutant = mutate::mutate_with(&m.layout, &m.bytes, &mut rng, ops);
        let kind = match case.cmd {
            Cmd::Plan => "p",
            Cmd::Screen => "s",
            Cmd::Run => "r",
        };
        let path = std::env::temp_dir().join(format!(
            "hfz-{}-{kind}{}-{}.gguf",
            std::process::id(),
            case.index,
            m.tag
        ));
        match case.cmd {
            Cmd::Plan | Cmd::Screen => mutant.write_sparse(&path),
            Cmd::Run => mutant.write_full(&m.path, &path),
        }
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        let args = case.args(&path);
        let timeout = if case.cmd == Cmd::Run {
            RUN_TIMEOUT
        } else {
            PLAN_TIMEOUT
        };
        let out = run_hypura(&args, timeout, &self.env, self.cfg.as_limit);
        let mut probs = problems(&out, &path);
        // `plan` and `run` run the same checks: a file plan accepted must not be refused by
        // llama.cpp's loader.
        if case.plan_accepted {
            if let Some(e) = out.error_lines().first() {
                let line = String::from_utf8_lossy(e);
                if line.contains("llama.cpp could not") {
                    probs.push(format!(
                        "plan accepted the file, llama.cpp refused it: {line}"
                    ));
                }
            }
        }
        for p in &out.leaked {
            let _ = std::fs::remove_file(p);
        }
        let cmd_key = match case.cmd {
            Cmd::Plan => "plan",
            Cmd::Screen => "plan(screen)",
            Cmd::Run => match case.budget.as_slice() {
                ["--baseline"] => "run --baseline",
                [_, "10%"] => "run --weights-budget 10%",
                _ => "run --weights-budget 50%",
            },
        };
        {
            let mut c = self.counters.lock().unwrap();
            *c.cases.entry(cmd_key).or_default() += 1;
            match out.status {
                Status::Code(0) => *c.exit0.entry(cmd_key).or_default() += 1,
                Status::Code(_) => *c.errors.entry(cmd_key).or_default() += 1,
                _ => {}
            }
            c.leaked += usize::from(!out.leaked.is_empty());
            if let Some(e) = out.error_lines().first() {
                let key = format!(
                    "{cmd_key}: {}",
                    normalize(&String::from_utf8_lossy(e), &path, 140)
                );
                *c.messages.entry(key).or_default() += 1;
            }
        }
        if probs.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            let cost = match case.cmd {
                Cmd::Run => mutant.len(),
                _ => (mutant.header.len() as u64).min(mutant.len()),
            };
            let keep = self.cfg.only.is_some()
                || self
                    .kept_bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |k| {
                        (k + cost <= self.cfg.keep_bytes).then_some(k + cost)
                    })
                    .is_ok();
            let file = if keep {
                format!("kept at {}", path.display())
            } else {
                let _ = std::fs::remove_file(&path);
                format!(
                    "not kept (HYPURA_FUZZ_KEEP_MB spent): {}",
                    case.reproduce(self.cfg.seed)
                )
            };
            let command = format!(
                "hypura {}",
                args.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            self.failures.lock().unwrap().push(Failure {
                label: case.label(),
                model: m.tag,
                case_seed: case.case_seed,
                reproduce: case.reproduce(self.cfg.seed),
                mutation: mutant.describe(),
                command,
                outcome: format!(
                    "{} after {:.2}s",
                    out.status_text(),
                    out.elapsed.as_secs_f64()
                ),
                signature: signature(case.cmd, &out, &probs, &path),
                problems: probs,
                error_lines: out
                    .error_lines()
                    .iter()
                    .map(|e| printable(e, 400))
                    .collect(),
                abort: abort_lines(&out).into_iter().take(6).collect(),
                tail: out.stderr_tail(6),
                file,
                leaked: out.leaked.clone(),
            });
        }
        out.status
    }
}

/// Runs `f` over `items` on `workers` threads; results in order.
fn parallel<T: Sync, R: Send>(items: &[T], workers: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// Picks the `run` cases: candidates are screened with `plan`, and each model gets about 85%
/// mutants that plan accepted (run must cope with them) and 15% that plan rejected.
fn select_run_cases(fuzz: &Fuzz, n: usize) -> Vec<Case> {
    let seed = fuzz.cfg.seed;
    let n_models = fuzz.models.len();
    let per_model: Vec<usize> = (0..n_models)
        .map(|m| n / n_models + usize::from(m < n % n_models))
        .collect();
    let want_rejected: Vec<usize> = per_model.iter().map(|k| (k * 15 + 50) / 100).collect();
    let want_accepted: Vec<usize> = per_model
        .iter()
        .zip(&want_rejected)
        .map(|(k, r)| k - r)
        .collect();
    let mut accepted = vec![0usize; n_models];
    let mut rejected = vec![0usize; n_models];
    let mut selected = Vec::new();
    let mut next = 0usize;
    let full = |acc: &[usize], rej: &[usize], m: usize| {
        acc[m] >= want_accepted[m] && rej[m] >= want_rejected[m]
    };
    while !(0..n_models).all(|m| full(&accepted, &rejected, m)) && next < n * 30 {
        let missing: usize = (0..n_models)
            .map(|m| {
                want_accepted[m].saturating_sub(accepted[m])
                    + want_rejected[m].saturating_sub(rejected[m])
            })
            .sum();
        // About 3 in 4 candidates pass plan: screen a quarter more than is missing.
        let size = (missing + missing / 4).max(8);
        let batch: Vec<Case> = (next..next + size)
            .filter(|c| !full(&accepted, &rejected, c % n_models))
            .map(|c| Case::run(seed, c, Cmd::Screen, n_models))
            .collect();
        next += size;
        let results = parallel(&batch, WORKERS, |c| fuzz.execute(c));
        for (c, status) in batch.iter().zip(results) {
            let m = c.model;
            let ok = status == Status::Code(0);
            if ok && accepted[m] < want_accepted[m] {
                accepted[m] += 1;
            } else if matches!(status, Status::Code(_)) && !ok && rejected[m] < want_rejected[m] {
                // (A mutant that crashed or hung `plan` is reported there; `run` would only
                // repeat it, after a longer timeout.)
                rejected[m] += 1;
            } else {
                continue;
            }
            let mut case = Case::run(seed, c.index, Cmd::Run, n_models);
            case.plan_accepted = ok;
            selected.push(case);
        }
    }
    let split: Vec<String> = fuzz
        .models
        .iter()
        .enumerate()
        .map(|(m, model)| format!("{} {}+{}", model.tag, accepted[m], rejected[m]))
        .collect();
    eprintln!(
        "fuzz: {} run cases from {next} candidates (plan accepted+rejected): {}",
        selected.len(),
        split.join(", ")
    );
    selected
}

fn report(cfg: &Config, failures: &[Failure], counters: &Counters, elapsed: Duration) -> String {
    let mut r = String::new();
    let mut classes: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
    for f in failures {
        classes.entry(&f.signature).or_default().push(f);
    }
    let mut classes: Vec<_> = classes.into_iter().collect();
    classes.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let _ = writeln!(
        r,
        "GGUF header fuzz (seed {:#x}): {} failing cases of {} in {:.0?}; {} distinct failure classes",
        cfg.seed,
        failures.len(),
        counters.cases.values().sum::<usize>(),
        elapsed,
        classes.len()
    );
    let _ = writeln!(r, "\n== failure classes (most frequent first) ==");
    for (i, (sig, fs)) in classes.iter().enumerate() {
        let _ = writeln!(r, "[C{}] {}x {sig}", i + 1, fs.len());
        let labels: Vec<String> = fs
            .iter()
            .take(16)
            .map(|f| format!("{}({})", f.label, f.model))
            .collect();
        let more = if fs.len() > 16 {
            format!(" … +{}", fs.len() - 16)
        } else {
            String::new()
        };
        let _ = writeln!(r, "      cases: {}{more}", labels.join(" "));
    }
    let _ = writeln!(r, "\n== details: up to 3 cases per class ==");
    for (i, (_, fs)) in classes.iter().enumerate() {
        for f in fs.iter().take(3) {
            let _ = writeln!(
                r,
                "[C{}] {} {} (case seed {:#x}); reproduce: {}",
                i + 1,
                f.label,
                f.model,
                f.case_seed,
                f.reproduce
            );
            let _ = writeln!(r, "    mutation: {}", f.mutation);
            let _ = writeln!(r, "    command:  {}", f.command);
            let _ = writeln!(r, "    outcome:  {}", f.outcome);
            for p in &f.problems {
                let _ = writeln!(r, "    problem:  {p}");
            }
            for e in &f.error_lines {
                let _ = writeln!(r, "    error:    {e}");
            }
            for a in &f.abort {
                if !f.error_lines.iter().any(|e| e == a) {
                    let _ = writeln!(r, "    abort:    {a}");
                }
            }
            for t in &f.tail {
                let _ = writeln!(r, "    stderr:   {t}");
            }
            let _ = writeln!(r, "    file:     {}", f.file);
            if !f.leaked.is_empty() {
                let _ = writeln!(r, "    leaked:   {:?} (removed by the test)", f.leaked);
            }
        }
    }
    let _ = writeln!(r, "\n== every failing case ==");
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, (s, _))| (*s, i + 1))
        .collect();
    for f in failures {
        let _ = writeln!(
            r,
            "{} {} [C{}] {} :: {}",
            f.label,
            f.model,
            index[f.signature.as_str()],
            f.outcome,
            printable(f.mutation.as_bytes(), 200)
        );
    }
    r
}

fn summary(counters: &Counters) -> String {
    let mut s = String::new();
    for (k, n) in &counters.cases {
        let _ = writeln!(
            s,
            "fuzz: {k}: {n} cases, {} exit 0, {} exit non-zero, {} signal/hang",
            counters.exit0.get(k).unwrap_or(&0),
            counters.errors.get(k).unwrap_or(&0),
            n - counters.exit0.get(k).unwrap_or(&0) - counters.errors.get(k).unwrap_or(&0)
        );
    }
    let _ = writeln!(
        s,
        "fuzz: {} processes left a stand-in file behind (removed)",
        counters.leaked
    );
    let mut msgs: Vec<_> = counters.messages.iter().collect();
    msgs.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let _ = writeln!(s, "fuzz: most frequent error lines:");
    for (m, n) in msgs.iter().take(25) {
        let _ = writeln!(s, "  {n:5}x {m}");
    }
    s
}

/// Fuzzes `models`: `plan_cases` plan cases and `run_cases` run cases spread over them (or the
/// one case `HYPURA_FUZZ_ONLY` names); fails with a report of every failing case.
fn fuzz_models(cfg: &Config, models: &[Model], plan_cases: usize, run_cases: usize) {
    // Compact stderr: no Rust backtraces (a panic still says "panicked at FILE:LINE").
    let mut env = vec![("RUST_BACKTRACE", "0")];
    if !cfg.backtrace {
        env.push(("GGML_NO_BACKTRACE", "1"));
    }
    let fuzz = Fuzz {
        cfg,
        models,
        kept_bytes: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        counters: Mutex::new(Counters::default()),
        env,
    };
    let n_models = models.len();
    let start = Instant::now();
    match &cfg.only {
        Some((kind, i)) if kind == "plan" => {
            fuzz.execute(&Case::plan(cfg.seed, *i, n_models));
        }
        Some((_, i)) => {
            fuzz.execute(&Case::run(cfg.seed, *i, Cmd::Screen, n_models));
            fuzz.execute(&Case::run(cfg.seed, *i, Cmd::Run, n_models));
        }
        None => {
            let plan: Vec<Case> = (0..plan_cases)
                .map(|i| Case::plan(cfg.seed, i, n_models))
                .collect();
            parallel(&plan, WORKERS, |c| fuzz.execute(c));
            eprintln!("fuzz: {} plan cases in {:.1?}", plan.len(), start.elapsed());
            let t = Instant::now();
            let run = select_run_cases(&fuzz, run_cases);
            eprintln!("fuzz: screening in {:.1?}", t.elapsed());
            let t = Instant::now();
            parallel(&run, WORKERS, |c| fuzz.execute(c));
            eprintln!("fuzz: {} run cases in {:.1?}", run.len(), t.elapsed());
        }
    }
    let elapsed = start.elapsed();
    let counters = fuzz.counters.into_inner().unwrap();
    let mut failures = fuzz.failures.into_inner().unwrap();
    failures.sort_by_key(|f| (f.label.starts_with("run"), f.label.clone()));
    eprint!("{}", summary(&counters));
    eprintln!(
        "fuzz: {} failing cases; total {:.1?}",
        failures.len(),
        elapsed
    );
    if !failures.is_empty() {
        let text = report(cfg, &failures, &counters, elapsed);
        let file = std::env::temp_dir().join(format!("hfz-report-{}.txt", std::process::id()));
        let _ = std::fs::write(&file, &text);
        panic!("{text}\n(report also written to {})", file.display());
    }
}

#[test]
fn gguf_header_mutations() {
    let cfg = Config::from_env();
    let models = [load(SMOLLM2, "smollm2"), load(GEMMA3, "gemma3")];
    fuzz_models(&cfg, &models, cfg.plan_cases, cfg.run_cases);
}

/// The same over a small synthetic model of every family hypura tiers (their own rules:
/// sliding windows, experts, sinks, shared experts…), fewer cases per model.
/// `HYPURA_FUZZ_FAMILY_PLAN_CASES` (default 100 per family) and `HYPURA_FUZZ_FAMILY_RUN_CASES`
/// (20 per family) set the counts.
#[test]
fn family_header_mutations() {
    let cfg = Config::from_env();
    let models: Vec<Model> = FAMILIES
        .iter()
        .map(|family| {
            let path = common::tempfile(&format!("fuzz-seed-{}.gguf", family.name));
            // The family's layer-by-layer widths (with experts: Gemma 4) and
            // next-token-prediction layer, where it has them, so that mutations reach their
            // rules too.
            let mut extra = Vec::new();
            if family.widths_per_layer {
                extra.extend(["--n-head-kv-layers", "1,2", "--n-ff-layers", "512,256"]);
                extra.extend(["--n-expert", "4", "--n-expert-used", "2"]);
            }
            if family.nextn.is_some() {
                extra.extend(["--n-nextn", "1"]);
            }
            let mut args = vec![
                "synth",
                "--arch",
                family.name,
                "--out",
                path.to_str().unwrap(),
                "--n-layer",
                "4",
                "--n-embd",
                "256",
                "--n-ff",
                "512",
                "--n-ff-exp",
                "256",
                "--n-head",
                "4",
                "--n-head-kv",
                "2",
                "--n-vocab",
                "600",
                "--n-dense-lead",
                "1",
                "--type",
                "q8_0",
            ];
            args.extend(extra);
            let out = common::hypura(&args);
            assert_eq!(out.code, 0, "{}", out.stderr);
            let (bytes, layout) = walk_file(&path);
            Model {
                tag: family.name,
                path,
                bytes,
                layout,
            }
        })
        .collect();
    let n = models.len() as u64;
    let plan_cases = env_u64("HYPURA_FUZZ_FAMILY_PLAN_CASES", 100 * n) as usize;
    let run_cases = env_u64("HYPURA_FUZZ_FAMILY_RUN_CASES", 20 * n) as usize;
    fuzz_models(&cfg, &models, plan_cases, run_cases);
    for m in &models {
        let _ = std::fs::remove_file(&m.path);
    }
}

/// The walker agrees with what is known about both models' headers.
#[test]
fn walker_reads_both_models() {
    for (name, tensors, first_token) in [(SMOLLM2, 272, "<|endoftext|>"), (GEMMA3, 236, "<pad>")] {
        let path = model(name);
        let (bytes, l) = walk_file(&path);
        assert_eq!(l.tensors.len(), tensors, "{name}");
        assert_eq!(l.kvs.len(), 33, "{name}");
        assert_eq!(l.alignment, 32);
        assert_eq!(l.data_start % 32, 0);
        assert!(l.data_start >= l.header_end && l.data_start - l.header_end < 32);
        let data = l.file_len - l.data_start as u64;
        for t in &l.tensors {
            assert_eq!(t.offset % 32, 0, "{name} {}", t.name);
            assert!(
                t.offset + tensor_bytes(t) <= data,
                "{name} {} past the end",
                t.name
            );
            assert_eq!(
                &bytes[t.name_pos..t.name_pos + t.name.len()],
                t.name.as_bytes()
            );
        }
        let tokens = l.kv("tokenizer.ggml.tokens").unwrap().arr.as_ref().unwrap();
        assert_eq!(tokens.strings.len() as u64, tokens.count);
        let (pos, len) = tokens.strings[0];
        assert_eq!(
            &bytes[pos + 8..pos + 8 + len as usize],
            first_token.as_bytes()
        );
        let arch = l.arch();
        let bc = l.kv(&format!("{arch}.block_count")).unwrap();
        assert_eq!(bc.as_u64(), Some(if arch == "llama" { 30 } else { 18 }));
        // Every recorded field lies in the header and reads back as the walker saw it.
        for f in &l.fields {
            assert!(f.pos + f.width <= l.header_end, "{}", f.name());
            if f.kind == Kind::TensorCount {
                assert_eq!(
                    u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
                    tensors as u64
                );
            }
        }
    }
}

/// The same seed gives the same mutant; mutants keep the header's length.
#[test]
fn mutations_are_deterministic() {
    let m = load(SMOLLM2, "smollm2");
    for i in 0..300u64 {
        let s = case_seed(DEFAULT_SEED, TAG_PLAN, i);
        let a = mutate(&m.layout, &m.bytes, &mut Rng::new(s));
        let b = mutate(&m.layout, &m.bytes, &mut Rng::new(s));
        assert_eq!(a.header, b.header);
        assert_eq!(a.tail, b.tail);
        assert_eq!(a.desc, b.desc);
        assert_eq!(a.header.len(), m.layout.data_start);
        assert!(!a.desc.is_empty());
        assert!(
            a.header != m.bytes[..m.layout.data_start]
                || a.tail != mutate::Tail::Keep
                || a.desc.iter().any(|d| d.contains("->"))
        );
    }
}
