//! `/metrics`, `/healthz` and `/readyz` on `http.listen`.

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::health::Health;
use crate::metrics::metrics;

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

/// Binds and spawns the server on the current System. One worker: it
/// serves a scrape now and then, and the machine has two cores. Signals are
/// ours (the Supervisor drains), not actix-server's.
pub fn start(listen: &str, health: Arc<Health>) -> std::io::Result<actix_web::dev::ServerHandle> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(health.clone()))
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
