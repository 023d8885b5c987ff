//! Running `hypura` on hostile input with a timeout, and the checks every such run must pass:
//! an exit code (not a signal), no Rust panic, no hang, and on failure exactly one short
//! `hypura: error:` line without control characters that names the model file.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest acceptable error line, in bytes.
pub const MAX_ERROR_LINE: usize = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
    /// Still running at the deadline (then killed).
    Hang,
}

#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub pid: u32,
    /// Stand-in files (`hypura-<pid>-*.gguf`) the process left in /dev/shm or the temp dir.
    pub leaked: Vec<PathBuf>,
}

impl Outcome {
    pub fn status_text(&self) -> String {
        match self.status {
            Status::Code(c) => format!("exit code {c}"),
            Status::Signal(s) => format!("killed by signal {s} ({})", signal_name(s)),
            Status::Hang => format!("hang: still running after {:.0?}, killed", self.elapsed),
        }
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The lines starting with `hypura: error:`.
    pub fn error_lines(&self) -> Vec<&[u8]> {
        self.stderr
            .split(|&b| b == b'\n')
            .filter(|l| l.starts_with(b"hypura: error:"))
            .collect()
    }

    /// The last `n` non-empty stderr lines, each cut to 240 bytes, control characters escaped.
    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        let lines: Vec<&[u8]> = self
            .stderr
            .split(|&b| b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| printable(l, 240))
            .collect()
    }
}

pub fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGTERM => "SIGTERM",
        _ => "?",
    }
}

/// `bytes` lossily decoded, control characters escaped, cut to `max` bytes.
pub fn printable(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f {
            s.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            s.push(c);
        }
        if s.len() >= max {
            s.push('…');
            break;
        }
    }
    s
}

/// The stand-in files a process with id `pid` may have left behind.
pub fn standins_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("hypura-{pid}-");
    let mut found = Vec::new();
    for dir in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// Runs the hypura binary with `args`, killing it at `timeout`. `env` adds variables. The
/// child's address space is capped at `as_limit` bytes (0: no cap) so that a header asking for
/// absurd allocations cannot take the machine's memory from everything else on it.
pub fn run_hypura(
    args: &[OsString],
    timeout: Duration,
    env: &[(&str, &str)],
    as_limit: u64,
) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hypura"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if as_limit > 0 {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: as_limit as libc::rlim_t,
                    rlim_max: as_limit as libc::rlim_t,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn hypura");
    let pid = child.id();
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = start + timeout;
    let status = loop {
        match child.try_wait().expect("wait for hypura") {
            Some(st) => {
                break match (st.code(), st.signal()) {
                    (Some(c), _) => Status::Code(c),
                    (None, Some(s)) => Status::Signal(s),
                    (None, None) => Status::Code(-1),
                }
            }
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Status::Hang;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let leaked = standins_of(pid);
    Outcome {
        status,
        stdout,
        stderr,
        elapsed,
        pid,
        leaked,
    }
}

pub fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Everything wrong with `out` for a run on the model file `model` (empty: it behaved).
/// A zero exit is fine; a non-zero one must come with exactly one short, clean
/// `hypura: error:` line that names the file (its file name).
pub fn problems(out: &Outcome, model: &Path) -> Vec<String> {
    let mut p = Vec::new();
    match out.status {
        Status::Signal(_) | Status::Hang => p.push(out.status_text()),
        Status::Code(_) => {}
    }
    let text = out.stderr_text();
    if let Some(i) = text.find("panicked") {
        let line_start = text[..i].rfind('\n').map_or(0, |j| j + 1);
        let rest: String = text[line_start..]
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(" | ");
        p.push(format!("Rust panic: {}", printable(rest.as_bytes(), 300)));
    }
    if let Status::Code(code) = out.status {
        if code != 0 {
            let name = model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let errors = out.error_lines();
            if errors.len() != 1 {
                p.push(format!(
                    "{} `hypura: error:` lines (want exactly 1)",
                    errors.len()
                ));
            }
            for e in &errors {
                if e.len() > MAX_ERROR_LINE {
                    p.push(format!(
                        "error line is {} bytes (max {MAX_ERROR_LINE})",
                        e.len()
                    ));
                }
                if let Some(i) = e.iter().position(|&b| b < 0x20 || b == 0x7f) {
                    p.push(format!(
                        "error line has control character {:#04x} at byte {i}",
                        e[i]
                    ));
                }
                if !name.is_empty() && !String::from_utf8_lossy(e).contains(&name) {
                    p.push("error line does not name the model file".to_string());
                }
            }
            // The error is printed last: anything after it is the rest of a multi-line message.
            if let Some(last) = errors.last() {
                let end = last.as_ptr() as usize - out.stderr.as_ptr() as usize + last.len();
                let after = &out.stderr[end..];
                if after.iter().any(|b| !b.is_ascii_whitespace()) {
                    p.push(format!(
                        "text after the error line (a multi-line message?): {}",
                        printable(after.trim_ascii(), 120)
                    ));
                }
            }
        }
    }
    p
}

/// The lines of stderr that say why a process aborted (GGML_ASSERT, C++ exceptions, …).
pub fn abort_lines(out: &Outcome) -> Vec<String> {
    let keys = [
        "GGML_ASSERT",
        "GGML_ABORT",
        "error:",
        "terminate called",
        "what():",
        "Assertion",
        "fatal",
        "panicked",
        "memory allocation of",
        "stack overflow",
        // ggml_abort's "FILE:LINE: message" (e.g. "binary_op: unsupported types")
        "llama.cpp/",
    ];
    out.stderr
        .split(|&b| b == b'\n')
        .filter(|l| {
            let s = String::from_utf8_lossy(l);
            keys.iter().any(|k| s.contains(k))
        })
        .map(|l| printable(l, 240))
        .collect()
}
