//! The engine's thread: it owns the model and its [`Engine`], takes requests from the HTTP
//! handlers over a channel, steps the engine while any request runs, and sends each
//! request's text back on the request's own channel. A request whose channel was closed (the
//! client went away) is cancelled, freeing its sequence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use hypura_core::{Engine, EngineEvent, GenerateOptions, Model, RequestId, StopReason};
use tokio::sync::mpsc::UnboundedSender;

/// What a request hears back.
#[derive(Debug)]
pub enum Update {
    /// More text.
    Text(String),
    /// The request ended.
    Done {
        reason: StopReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// It could not run (settings, a prompt too long, a decode error).
    Failed(String),
}

/// What the engine's thread has done, for `/health`.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests running now.
    pub running: AtomicU64,
    /// Requests waiting for a sequence.
    pub waiting: AtomicU64,
    /// Requests ended.
    pub finished: AtomicU64,
    /// Of them, requests cancelled because their client went away.
    pub cancelled: AtomicU64,
}

/// A request for the engine.
pub struct Submit {
    pub options: GenerateOptions,
    pub updates: UnboundedSender<Update>,
}

/// Runs the engine until every sender of `requests` is gone and no request runs.
pub fn run(model: Model, requests: mpsc::Receiver<Submit>, counts: &Counts) {
    let mut engine = Engine::new(model);
    let mut listeners: HashMap<RequestId, UnboundedSender<Update>> = HashMap::new();
    loop {
        let (running, waiting) = engine.load();
        counts.running.store(running as u64, Ordering::Relaxed);
        counts.waiting.store(waiting as u64, Ordering::Relaxed);
        if engine.is_idle() {
            match requests.recv() {
                Ok(submit) => start(&mut engine, &mut listeners, submit),
                Err(_) => return,
            }
        }
        while let Ok(submit) = requests.try_recv() {
            start(&mut engine, &mut listeners, submit);
        }
        let gone: Vec<RequestId> = listeners
            .iter()
            .filter(|(_, tx)| tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            engine.cancel(id);
            listeners.remove(&id);
            counts.cancelled.fetch_add(1, Ordering::Relaxed);
            counts.finished.fetch_add(1, Ordering::Relaxed);
        }
        if engine.is_idle() {
            continue;
        }
        match engine.step() {
            Ok(events) => {
                for event in events {
                    if matches!(event, EngineEvent::Finished { .. }) {
                        counts.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    route(&mut listeners, event);
                }
            }
            Err(e) => {
                log::error!("the engine's step failed: {e}");
                for (id, tx) in listeners.drain() {
                    engine.cancel(id);
                    let _ = tx.send(Update::Failed(e.to_string()));
                }
            }
        }
    }
}

fn start(
    engine: &mut Engine,
    listeners: &mut HashMap<RequestId, UnboundedSender<Update>>,
    submit: Submit,
) {
    match engine.submit(submit.options) {
        Ok(id) => {
            listeners.insert(id, submit.updates);
        }
        Err(e) => {
            let _ = submit.updates.send(Update::Failed(e.to_string()));
        }
    }
}

fn route(listeners: &mut HashMap<RequestId, UnboundedSender<Update>>, event: EngineEvent) {
    match event {
        EngineEvent::Text { id, text } => {
            if let Some(tx) = listeners.get(&id) {
                let _ = tx.send(Update::Text(text));
            }
        }
        EngineEvent::Finished {
            id,
            reason,
            tokens,
            prompt_tokens,
            ..
        } => {
            if let Some(tx) = listeners.remove(&id) {
                let _ = tx.send(Update::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens: tokens.len(),
                });
            }
        }
        _ => {}
    }
}
