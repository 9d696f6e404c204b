//! Log output through `tracing`, pretty or JSON, on stderr. Verbosity follows `RUST_LOG`.
//!
//! Sessions log inside a `session` span (session id, transport, remote address, connection,
//! document, user) and rooms inside a `room` span (document), so every line says whose it
//! is. Tokens, keys and document contents are never logged: the relay's own lines carry
//! none, and [`payload_safe`] caps the verbosity of dependencies whose detailed levels print
//! what they carry (tungstenite traces every WebSocket frame with its payload, axum traces
//! rejections quoting the request body), so that even `RUST_LOG=trace` cannot print them.
//!
//! Built with the `otel` feature, the same spans are also exported as OpenTelemetry traces
//! over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard `OTEL_*`
//! variables apply, e.g. `OTEL_SERVICE_NAME`); without the variable nothing is exported.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Keeps trace export running; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    otel: Option<otel::Exporter>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(exporter) = self.otel.take() {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber. Call once, early in `main`, outside any async runtime,
/// and keep the guard until the end.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a collector.
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        // A global filter: it applies to every layer below, the OpenTelemetry export included.
        .with(filter_fn(payload_safe))
        .with(fmt);
    #[cfg(feature = "otel")]
    {
        let (layer, exporter) = otel::layer();
        subscriber.with(layer).init();
        Telemetry { otel: exporter }
    }
    #[cfg(not(feature = "otel"))]
    {
        subscriber.init();
        Telemetry {}
    }
}

/// Targets that log WebSocket frames or messages, payload included, at `debug` or `trace`
/// (through the `log` crate, which `tracing` picks up): capped at `info`.
const FRAME_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Whether an event or span may be logged whatever `RUST_LOG` says. The relay's own crates
/// (`aetherflow_*`) log no contents at any level; other crates are capped at `debug`, whose
/// lines describe connections rather than bytes (`trace` is where hyper, h2 and axum dump
/// buffers and rejected bodies), and the WebSocket crates (`tungstenite`, `tokio_tungstenite`)
/// at `info`.
pub fn payload_safe(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    if target.starts_with("aetherflow") {
        return true;
    }
    let crate_name = target.split("::").next().unwrap_or(target);
    let cap = if FRAME_TARGETS.contains(&crate_name) {
        Level::INFO
    } else {
        Level::DEBUG
    };
    // More verbose levels compare greater: TRACE > DEBUG > INFO.
    *metadata.level() <= cap
}

#[cfg(feature = "otel")]
mod otel {
    //! The OpenTelemetry layer: OTLP/HTTP export in batches from a background thread.

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// The tracer provider, shut down (flushed) at exit.
    pub(super) struct Exporter(SdkTracerProvider);

    impl Exporter {
        pub(super) fn shutdown(self) {
            if let Err(e) = self.0.shutdown() {
                eprintln!("aetherflow: trace export did not shut down cleanly: {e}");
            }
        }
    }

    /// The export layer, if `OTEL_EXPORTER_OTLP_ENDPOINT` is set and the exporter builds.
    pub(super) fn layer<S>() -> (Option<impl Layer<S>>, Option<Exporter>)
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return (None, None);
        }
        // The endpoint and the other OTEL_* settings are read from the environment.
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("aetherflow: trace export disabled: {e}");
                return (None, None);
            }
        };
        let mut resource = opentelemetry_sdk::Resource::builder();
        // OTEL_SERVICE_NAME, when set, names the service; "aetherflow" otherwise.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("aetherflow");
        }
        let resource = resource.build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("aetherflow");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer);
        (Some(layer), Some(Exporter(provider)))
    }
}
