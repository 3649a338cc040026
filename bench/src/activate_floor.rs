//! The floor of the activation path: a process that does nothing but take each HTTP
//! request's body, send it as a request to `activate.<node>` over NATS, and answer 200
//! with the reply's bytes. No routing, validation, trace context, record, metrics or
//! status relay: the least an HTTP hop in front of NATS costs on this machine, the
//! baseline `POST /activate` is compared with beside the bus itself (as the SSE floor is
//! for fan-out). It answers 502 when NATS does not answer.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::http1,
    Request, Response,
};
use hyper_util::rt::TokioIo;

/// Serves `127.0.0.1:port`, forwarding to `activate.<node>`, until killed.
pub async fn serve(nats_url: &str, port: u16, node: &str) -> anyhow::Result<()> {
    let subject = schemas::subject::activate(&schemas::NodeName::new(node)?);
    let client = async_nats::connect(nats_url).await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let (client, subject) = (client.clone(), subject.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (client, subject) = (client.clone(), subject.clone());
                async move { Ok::<_, Infallible>(forward(&client, subject, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

/// The request's body sent to `subject`; the reply's bytes answered.
async fn forward(
    client: &async_nats::Client,
    subject: String,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let answer = |status: u16, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return answer(400, e.to_string().into()),
    };
    match client.request(subject, body).await {
        Ok(reply) => answer(200, reply.payload),
        Err(e) => answer(502, e.to_string().into()),
    }
}
