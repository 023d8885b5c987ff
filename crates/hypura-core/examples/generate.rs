//! Generate text from a GGUF model with a quarter of its weights in RAM and the rest streamed
//! from the file:
//!
//! ```text
//! cargo run --release -p hypura-core --example generate -- models/gemma-3-270m-q4_k_m.gguf 25%
//! ```
use std::io::Write;
use std::ops::ControlFlow;

use hypura_core::{Budget, GenerateOptions, LoadOptions, Model, Plan};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: generate MODEL.gguf [BUDGET, e.g. 25% or 2G]")?;
    let budget: Budget = args.next().as_deref().unwrap_or("25%").parse()?;

    let options = LoadOptions::new(path).budget(budget).context_length(512);
    // The plan needs only the file's header: what stays in RAM, what streams, how fast.
    let plan = Plan::for_options(&options)?;
    eprintln!(
        "{} of {} bytes of weights resident, {} bytes read per token, bound {:.1} tok/s",
        plan.ram_resident_bytes, plan.model_bytes, plan.streamed_bytes_per_token, plan.bound_tok_s
    );

    let mut model = Model::load(&options)?;
    let request = GenerateOptions::new("The three primary colours are").max_tokens(24);
    let stats = model.generate(&request, |piece| {
        // Each piece is whole UTF-8 text; return ControlFlow::Break(()) to stop early.
        print!("{piece}");
        let _ = std::io::stdout().flush();
        ControlFlow::Continue(())
    })?;
    println!();
    eprintln!(
        "{:.2} tok/s, {} bytes read per token",
        stats.decode_tok_s, stats.disk_bytes_per_token as u64
    );
    Ok(())
}
