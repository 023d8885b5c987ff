//! The engine: requests decoded together (more of them than sequences, so some wait) each
//! get the tokens a lone generation with the same settings gets; cancelling frees a sequence;
//! a stop string ends a request just before it.

use std::collections::HashMap;
use std::ops::ControlFlow;

mod common;
use common::{model_path, SMOLLM2};

use hypura_core::{
    Budget, Engine, EngineEvent, GenerateOptions, LoadOptions, Model, RequestId, StopReason,
};

fn load(sequences: u32, budget: Budget) -> Model {
    load_batched(sequences, budget, 128)
}

/// With `batch` tokens per llama.cpp micro-batch.
fn load_batched(sequences: u32, budget: Budget, batch: u32) -> Model {
    let options = LoadOptions::new(model_path(SMOLLM2))
        .budget(budget)
        .batch_size(batch)
        .sequences(sequences)
        .context_length(256 * sequences)
        .threads(2)
        .repack(false)
        .expert_profiles(None);
    Model::load(&options).unwrap()
}

fn requests() -> Vec<GenerateOptions> {
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village,",
        "def fibonacci(n):",
        "The three primary colours are",
        "In 1969, the first",
        "A good recipe for bread needs",
    ];
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            GenerateOptions::new(*p)
                .max_tokens(10 + i)
                .temperature(if i % 2 == 0 { 0.0 } else { 0.9 })
                .seed(i as u64 + 1)
                .stop_at_end_of_generation(false)
        })
        .collect()
}

#[test]
fn batched_requests_get_what_a_lone_generation_gets() {
    // A tiered model's sequences share llama.cpp's unified KV cache (one pass over the
    // streamed weights per step), where a sequence's cells lie among the others': attention
    // sums the same terms in another grouping, so a sampled token can differ from a lone
    // run's in the last bits. Greedy requests there; sampled ones where every weight is
    // resident (a cache per sequence). At 25% hypura computes the LM head itself,
    // micro-batch by micro-batch (16 tokens: the prompts' batches split, with outputs in
    // several).
    for (budget, batch) in [
        (Budget::AllWeights, 128),
        (Budget::WeightPercent(50.0), 128),
        (Budget::WeightPercent(25.0), 16),
    ] {
        let greedy = budget != Budget::AllWeights;
        let requests = || {
            requests()
                .into_iter()
                .map(|r| if greedy { r.temperature(0.0) } else { r })
                .collect::<Vec<_>>()
        };
        let mut lone = load_batched(1, budget, batch);
        let expected: Vec<(Vec<i32>, String)> = requests()
            .iter()
            .map(|r| {
                let mut text = String::new();
                let stats = lone
                    .generate(r, |piece| {
                        text.push_str(piece);
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                (stats.tokens, text)
            })
            .collect();
        drop(lone);

        let mut engine = Engine::new(load_batched(4, budget, batch));
        let ids: Vec<RequestId> = requests()
            .into_iter()
            .map(|r| engine.submit(r).unwrap())
            .collect();
        assert_eq!(engine.load(), (0, 6));
        let mut texts: HashMap<RequestId, String> = HashMap::new();
        let mut done: HashMap<RequestId, Vec<i32>> = HashMap::new();
        let mut most_running = 0;
        while !engine.is_idle() {
            let events = engine.step().unwrap();
            most_running = most_running.max(engine.load().0);
            for event in events {
                match event {
                    EngineEvent::Text { id, text } => texts.entry(id).or_default().push_str(&text),
                    EngineEvent::Finished {
                        id, reason, tokens, ..
                    } => {
                        assert_eq!(reason, StopReason::MaxTokens);
                        done.insert(id, tokens);
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(most_running, 4, "never ran four at once");
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(done[id], expected[i].0, "{budget:?}: request {i}'s tokens");
            assert_eq!(texts[id], expected[i].1, "{budget:?}: request {i}'s text");
        }
    }
}

#[test]
fn a_cancelled_request_frees_its_sequence() {
    let mut engine = Engine::new(load(2, Budget::AllWeights));
    let r = requests();
    let a = engine.submit(r[0].clone().max_tokens(50)).unwrap();
    let b = engine.submit(r[1].clone().max_tokens(50)).unwrap();
    let c = engine.submit(r[2].clone()).unwrap();
    engine.step().unwrap();
    assert_eq!(engine.load(), (2, 1));
    match engine.cancel(a) {
        Some(EngineEvent::Finished { reason, .. }) => assert_eq!(reason, StopReason::Caller),
        other => panic!("{other:?}"),
    }
    assert!(engine.cancel(a).is_none(), "cancelled twice");
    // A prompt longer than a request's context is refused at once, saying why.
    let e = engine
        .submit(GenerateOptions::new("word ".repeat(400)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("a request's context holds"), "{e}");
    engine.step().unwrap();
    assert_eq!(engine.load(), (2, 0), "the waiting request did not start");
    let mut finished = Vec::new();
    while !engine.is_idle() {
        for event in engine.step().unwrap() {
            if let EngineEvent::Finished { id, .. } = event {
                finished.push(id);
            }
        }
    }
    finished.sort();
    assert_eq!(finished, vec![b, c]);
}

#[test]
fn a_stop_string_ends_a_request_just_before_it() {
    let request = || {
        GenerateOptions::new("Once upon a time, in a small village,")
            .max_tokens(40)
            .temperature(0.9)
            .seed(11)
            .stop_at_end_of_generation(false)
    };
    let mut engine = Engine::new(load(2, Budget::AllWeights));
    let run = |engine: &mut Engine, request: GenerateOptions| {
        let id = engine.submit(request).unwrap();
        let mut text = String::new();
        let mut end = None;
        while !engine.is_idle() {
            for event in engine.step().unwrap() {
                match event {
                    EngineEvent::Text { id: i, text: piece } if i == id => text.push_str(&piece),
                    EngineEvent::Finished {
                        id: i,
                        reason,
                        tokens,
                        ..
                    } if i == id => end = Some((reason, tokens.len())),
                    _ => {}
                }
            }
        }
        let (reason, tokens) = end.expect("never finished");
        (text, reason, tokens)
    };
    let (whole, reason, tokens) = run(&mut engine, request());
    assert_eq!((reason, tokens), (StopReason::MaxTokens, 40));
    // A stop string from the middle of the answer, of three characters.
    let chars: Vec<(usize, char)> = whole.char_indices().collect();
    let (from, _) = chars[chars.len() / 2];
    let to = chars.get(chars.len() / 2 + 3).map_or(whole.len(), |c| c.0);
    let stop = whole[from..to].to_string();
    let before = &whole[..whole.find(&stop).unwrap()];

    let (text, reason, tokens) = run(
        &mut engine,
        request().stop(vec!["<never>".into(), stop.clone()]),
    );
    assert_eq!(reason, StopReason::StopString, "{stop:?} in {whole:?}");
    assert_eq!(text, before, "stopped at {stop:?}");
    assert!(tokens < 40);
    assert_eq!(engine.load(), (0, 0), "the sequence was not freed");

    // Model::generate stops the same way.
    let mut model = engine.into_model();
    let mut text = String::new();
    let stats = model
        .generate(&request().stop(vec![stop.clone()]), |piece| {
            text.push_str(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(stats.stop_reason, StopReason::StopString);
    assert_eq!(text, before);

    // Stop strings are checked: at most 16, none empty, none over 256 bytes.
    let mut engine = Engine::new(model);
    for (stops, why) in [
        (vec!["x".to_string(); 17], "17 stop strings"),
        (vec![String::new()], "empty"),
        (vec!["y".repeat(257)], "257 bytes"),
    ] {
        let e = engine
            .submit(request().stop(stops))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn a_step_reads_the_streamed_weights_once_whatever_it_mixes() {
    // Half the weights streamed, three sequences: a step that feeds prompts beside a decode,
    // and a step decoding sequences 0 and 2 (1 cancelled), each read the streamed weights
    // once. (With a KV cache per sequence, llama.cpp split such batches into several
    // micro-batches, each a pass over the streamed weights.)
    let model = load(3, Budget::WeightPercent(50.0));
    let per_pass = model.plan().streamed_bytes_per_token;
    assert!(per_pass > 0, "nothing streamed");
    let mut engine = Engine::new(model);
    let request = |prompt: &str| {
        GenerateOptions::new(prompt)
            .max_tokens(20)
            .temperature(0.0)
            .stop_at_end_of_generation(false)
    };
    let read = |engine: &Engine| engine.model().stats().bytes_read;
    let step_reads = |engine: &mut Engine| {
        let before = read(engine);
        engine.step().unwrap();
        read(engine) - before
    };
    let _a = engine.submit(request("The capital of France is")).unwrap();
    for _ in 0..3 {
        step_reads(&mut engine);
    }
    let b = engine
        .submit(request("Once upon a time, in a small village,"))
        .unwrap();
    engine.submit(request("def fibonacci(n):")).unwrap();
    let mixed = step_reads(&mut engine);
    assert_eq!(engine.load(), (3, 0));
    assert!(
        mixed < per_pass * 3 / 2,
        "a step feeding two prompts beside a decode read {mixed} bytes; one pass is {per_pass}"
    );
    engine.cancel(b).expect("b was running");
    let gapped = step_reads(&mut engine);
    assert!(
        gapped < per_pass * 3 / 2,
        "decoding sequences 0 and 2 read {gapped} bytes; one pass is {per_pass}"
    );
}
