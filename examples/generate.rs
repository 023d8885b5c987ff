//! Generate text with a RAM budget from Rust:
//!
//! ```text
//! cargo run --release -p hypura-examples --example generate -- models/gemma-3-270m-q4_k_m.gguf 25%
//! ```

use hypura_core::generate::{generate, GenerateOptions};
use hypura_core::gguf::GgufHeader;
use hypura_core::size::{format_bytes, parse_size};
use hypura_core::{LoadOptions, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or("usage: generate MODEL.gguf [BUDGET, e.g. 25% or 2G]")?;
    let budget = args.next().unwrap_or_else(|| "25%".to_string());

    // The budget may be a percentage of the model's weights: read the header to know them.
    let header = GgufHeader::open(model.as_ref())?;
    let mut options = LoadOptions::new(&model);
    options.ram_budget_bytes = Some(parse_size(&budget, header.weight_bytes())?);
    options.n_ctx = 512;

    let mut session = Session::load(options)?;
    let plan = session.plan();
    eprintln!(
        "{} resident, {} streamed per token",
        format_bytes(plan.ram_resident_bytes),
        format_bytes(plan.streamed_bytes_per_token)
    );
    let request = GenerateOptions {
        prompt: "The three primary colours are".to_string(),
        max_tokens: 24,
        temperature: 0.0,
        seed: 0,
        stop_at_eog: true,
    };
    let stats = generate(&mut session, &request, |bytes| {
        print!("{}", String::from_utf8_lossy(bytes))
    })?;
    println!();
    eprintln!(
        "{:.2} tok/s, {} read per token",
        stats.decode_tok_s,
        format_bytes(stats.disk_bytes_per_token as u64)
    );
    Ok(())
}
