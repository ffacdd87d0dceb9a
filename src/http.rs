//! The HTTP server on `http.listen`: `/metrics`, `/healthz` and `/readyz`
//! for machines; `/` (the status page) and `/api/status` (its numbers, as
//! JSON) for people.
//!
//! `/api/status` is `ingestd status --json`'s report (`crate::status`) plus
//! a `live` key (`crate::live`). The report's statements run on the System
//! arbiter's thread, where every database connection is driven (see
//! ARCHITECTURE.md); the handler awaits the answer without blocking its
//! worker. A report is kept for `REPORT_MAX_AGE` and one read runs at a time,
//! so however many pages poll, the database sees at most one report read
//! per interval.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_rt::ArbiterHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::db::Pool;
use crate::health::Health;
use crate::live::{Live, LiveState};
use crate::metrics::metrics;
use crate::status::{Report, FILES_SHOWN};

/// The status page: one self-contained file (inline CSS and JavaScript, no
/// external resource), polling `/api/status`.
const PAGE: &str = include_str!("status_page.html");
/// The page may only talk to this server, and loads nothing from elsewhere.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";
/// How long a report read from the database is served again.
const REPORT_MAX_AGE: Duration = Duration::from_secs(1);
/// A report read that takes longer is answered with 503.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/api/status` reads.
pub struct StatusSource {
    /// Filled once the database is reachable and migrated; until then
    /// `/api/status` answers 503 (with the `live` numbers).
    pub pool: Arc<OnceLock<Pool>>,
    pub live: Arc<LiveState>,
}

struct Api {
    source: StatusSource,
    /// The System arbiter: the report's statements run there.
    system: ArbiterHandle,
    /// The last report and when it was read; the lock makes one read at a
    /// time.
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Report>)>>,
}

impl Api {
    async fn report(&self) -> Result<Arc<Report>, String> {
        let Some(pool) = self.source.pool.get().cloned() else {
            return Err("starting: the database is not ready yet".into());
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, report)) = cached.as_ref() {
            if at.elapsed() < REPORT_MAX_AGE {
                return Ok(report.clone());
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.system.spawn(async move {
            let _ = tx.send(crate::status::read(&pool, Some(FILES_SHOWN)).await);
        });
        let report = match tokio::time::timeout(REPORT_TIMEOUT, rx).await {
            Ok(Ok(Ok(report))) => Arc::new(report),
            Ok(Ok(Err(e))) => return Err(format!("cannot read the status: {e}")),
            Ok(Err(_)) => return Err("the daemon is stopping".into()),
            Err(_) => return Err(format!("the database did not answer within {}s", REPORT_TIMEOUT.as_secs())),
        };
        *cached = Some((Instant::now(), report.clone()));
        Ok(report)
    }
}

#[derive(Serialize)]
struct ApiStatus<'a> {
    #[serde(flatten)]
    report: &'a Report,
    live: Live,
}

#[derive(Serialize)]
struct ApiUnavailable {
    error: String,
    live: Live,
}

async fn api_status(api: web::Data<Api>) -> HttpResponse {
    let report = api.report().await;
    let live = api.source.live.now();
    let (mut response, body) = match &report {
        Ok(report) => (HttpResponse::Ok(), serde_json::to_vec(&ApiStatus { report, live })),
        Err(error) => {
            (HttpResponse::ServiceUnavailable(), serde_json::to_vec(&ApiUnavailable { error: error.clone(), live }))
        }
    };
    match body {
        Ok(body) => response.content_type("application/json").insert_header(("Cache-Control", "no-store")).body(body),
        Err(e) => HttpResponse::InternalServerError().body(format!("cannot encode the status: {e}\n")),
    }
}

async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Content-Security-Policy", PAGE_POLICY))
        .body(PAGE)
}

async fn metrics_page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics().render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

async fn readyz(health: web::Data<Arc<Health>>) -> HttpResponse {
    if health.ready() {
        HttpResponse::Ok().body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable().body("not ready\n")
    }
}

/// Binds and spawns the server on the current System (called on the System
/// arbiter's thread). One worker: it serves a scrape or a page now and
/// then, and the machine has two cores. Signals are ours (the Supervisor
/// drains), not actix-server's.
pub fn start(listen: &str, health: Arc<Health>, status: StatusSource) -> std::io::Result<actix_web::dev::ServerHandle> {
    let api = web::Data::new(Api {
        source: status,
        system: actix_rt::Arbiter::current(),
        cached: tokio::sync::Mutex::new(None),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(health.clone()))
            .app_data(api.clone())
            .route("/", web::get().to(status_page))
            .route("/api/status", web::get().to(api_status))
            .route("/metrics", web::get().to(metrics_page))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}
