//! The `hypura` command-line tool: `plan` a placement, `run` a model (tiered or stock),
//! `synth` a model of a real shape, `bench` stock against hypura, `read-rate` the reader.
//! Every failure is one line on stderr, `hypura: error: …`, and exit status 1.

mod args;
mod commands;
mod parallel;
mod progress;
mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// `-v`/`-vv` set the level; `RUST_LOG` (env_logger's syntax, e.g. `hypura_core=debug`, or
/// `llama.cpp=debug` for llama.cpp's own log) adds to it and wins where both speak.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module(
            "llama.cpp",
            if verbose >= 2 {
                log::LevelFilter::Debug
            } else {
                log::LevelFilter::Off
            },
        )
        .parse_env(env_logger::Env::new().filter("RUST_LOG"))
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug | log::Level::Trace => "debug",
            };
            // Warnings read like the tool's own lines; chatter says where it comes from.
            if record.level() <= log::Level::Warn {
                writeln!(out, "hypura: {level}: {}", record.args())
            } else {
                writeln!(out, "[{level} {}] {}", record.target(), record.args())
            }
        })
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other error (clap's own message has a usage hint after).
            // Its first paragraph, joined (a missing argument's name is on the next line).
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let first = match first.trim_start_matches("error: ") {
                "" => "invalid arguments",
                text => text,
            };
            eprintln!("hypura: error: {first} (see hypura --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Plan(args) => commands::plan(args),
        Command::Run(args) => commands::run(args),
        Command::Chat(args) => commands::chat(args),
        Command::Serve(args) => commands::serve(args),
        Command::Synth(args) => commands::synth(args),
        Command::Bench(args) => commands::bench(args),
        Command::ReadRate(args) => commands::read_rate(args),
        Command::ExpertSim(args) => commands::expert_sim(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypura: error: {e}");
            ExitCode::FAILURE
        }
    }
}
