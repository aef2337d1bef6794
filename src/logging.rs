//! Logging set-up (SPEC section 9): `tracing`, JSON under
//! `AWS_LAMBDA_LOG_FORMAT=JSON`, the level from `AWS_LAMBDA_LOG_LEVEL` or
//! `RUST_LOG`. The runtime's invoke span puts the request id on every line.
//!
//! The level applies to this crate only. Other crates are capped at DEBUG
//! whatever is asked: at TRACE, lambda_runtime logs every raw event (task
//! tokens, rotation tokens) and the HTTP stack can log more. So `RUST_LOG`
//! takes a level, not a directive list that could lift the cap.

use std::str::FromStr;

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterFn, Targets, filter_fn};
use tracing_subscriber::fmt::MakeWriter;

/// The most any other crate may log.
const OTHERS_CAP: LevelFilter = LevelFilter::DEBUG;

/// Which events pass at `level`. Spans at INFO and above always pass: the
/// runtime's invoke span (INFO) carries the request id that every line must
/// show, also when only warnings are logged. Spans print only their fields
/// (ids and operation names), never as lines of their own.
pub fn filter(level: LevelFilter) -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    let targets = Targets::new()
        .with_default(level.min(OTHERS_CAP))
        .with_target(env!("CARGO_CRATE_NAME"), level);
    filter_fn(move |meta| {
        (meta.is_span() && *meta.level() <= Level::INFO)
            || targets.would_enable(meta.target(), meta.level())
    })
}

/// The level asked for in the environment (INFO when unset or unreadable).
pub fn level_from_env() -> LevelFilter {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|v| match v.trim().to_ascii_uppercase().as_str() {
            // Lambda's advanced logging controls also offer FATAL.
            "FATAL" => Some(LevelFilter::ERROR),
            other => LevelFilter::from_str(other).ok(),
        })
        .unwrap_or(LevelFilter::INFO)
}

/// Installs the global subscriber writing to `writer`.
pub fn init_with_writer<W>(level: LevelFilter, json: bool, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::prelude::*;
    let registry = tracing_subscriber::registry();
    let fmt = tracing_subscriber::fmt::layer()
        .without_time()
        .with_writer(writer);
    // An earlier subscriber (a test's) wins; nothing to do then.
    let _ = if json {
        registry
            .with(
                fmt.json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter(level)),
            )
            .try_init()
    } else {
        registry
            .with(fmt.with_ansi(false).with_filter(filter(level)))
            .try_init()
    };
}

/// The Lambda set-up: stdout, format and level from the environment.
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_with_writer(level_from_env(), json, std::io::stdout);
}
