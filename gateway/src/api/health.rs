//! `GET /healthz` and `GET /readyz`.

use std::sync::Arc;

use poem_openapi::{
    param::Header,
    payload::{Json, PlainText},
    ApiResponse, Object, OpenApi, ResponseContent,
};

use super::ApiTags;
use crate::state::State;

/// Health of the gateway.
#[derive(Debug, Clone, Object)]
pub struct Health {
    /// `ok`, or what is missing.
    pub status: String,
    /// Whether the NATS connection is up.
    pub nats_connected: bool,
    /// Whether topology discovery has completed a round.
    pub topology_discovered: bool,
    /// SSE clients connected to this gateway.
    pub sse_clients: u64,
    /// This gateway's id.
    pub gateway_id: String,
}

/// Readiness answer.
#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Connected to NATS: requests can be served.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Not connected to NATS.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

/// The metrics, in the format the scraper asked for.
#[derive(ResponseContent)]
pub enum MetricsBody {
    /// The classic Prometheus text format 0.0.4 (what a scraper gets unless it asks for
    /// OpenMetrics).
    #[oai(content_type = "text/plain; version=0.0.4; charset=utf-8")]
    Prometheus(PlainText<String>),
    /// OpenMetrics text, for `Accept: application/openmetrics-text`.
    #[oai(content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")]
    OpenMetrics(PlainText<String>),
}

/// The metrics answer.
#[derive(ApiResponse)]
pub enum MetricsResponse {
    /// The metrics.
    #[oai(status = 200)]
    Ok(MetricsBody),
}

/// Health operations.
pub struct HealthApi(pub Arc<State>);

impl HealthApi {
    fn health(&self) -> Health {
        let connected = self.0.bus_connected();
        Health {
            status: if connected { "ok" } else { "nats disconnected" }.into(),
            nats_connected: connected,
            topology_discovered: self.0.view.ready(),
            sse_clients: self.0.sse_clients() as u64,
            gateway_id: self.0.gateway_id().to_string(),
        }
    }
}

#[OpenApi]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process serves HTTP, whatever the state of NATS.
    #[oai(
        path = "/healthz",
        method = "get",
        tag = "ApiTags::Health",
        operation_id = "healthz"
    )]
    async fn healthz(&self) -> Json<Health> {
        Json(self.health())
    }

    /// Metrics
    ///
    /// Prometheus text format 0.0.4, or OpenMetrics when the `Accept` header asks for
    /// `application/openmetrics-text`: HTTP requests by route, method and status, their
    /// duration, `POST /activate` latency histogram, SSE clients, events relayed,
    /// refused and dropped, NATS connection state, `process_*` metrics and the build
    /// info. Per-node counts are on the bus: `$SRV.STATS`.
    #[oai(
        path = "/metrics",
        method = "get",
        tag = "ApiTags::Health",
        operation_id = "metrics"
    )]
    async fn metrics(
        &self,
        /// `application/openmetrics-text` selects OpenMetrics.
        #[oai(name = "accept")]
        accept: Header<Option<String>>,
    ) -> MetricsResponse {
        let m = &self.0.metrics;
        m.sse_clients
            .set(i64::try_from(self.0.sse_clients()).unwrap_or(i64::MAX));
        m.nats_connected.set(i64::from(self.0.bus_connected()));
        match m.negotiate(accept.0.as_deref()) {
            (body, crate::metrics::OPENMETRICS) => {
                MetricsResponse::Ok(MetricsBody::OpenMetrics(PlainText(body)))
            }
            (body, _) => MetricsResponse::Ok(MetricsBody::Prometheus(PlainText(body))),
        }
    }

    /// Readiness
    ///
    /// 200 when connected to NATS, 503 otherwise.
    #[oai(
        path = "/readyz",
        method = "get",
        tag = "ApiTags::Health",
        operation_id = "readyz"
    )]
    async fn readyz(&self) -> ReadyResponse {
        let health = self.health();
        if health.nats_connected {
            ReadyResponse::Ready(Json(health))
        } else {
            ReadyResponse::NotReady(Json(health))
        }
    }
}
