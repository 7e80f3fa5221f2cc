//! The ids a [`Client`](super::Client) sends: the `X-Request-Id` of the
//! user's request (for logs), and the idempotency id of each write.
use std::sync::Arc;

tokio::task_local! {
    /// The `X-Request-Id` of the request being served (see [`with_x_request_id`]).
    static X_REQUEST_ID: Option<Arc<str>>;
}

/// Run `work` with every database request it makes through a [`Client`](crate::Client)
/// carrying `X-Request-Id: id` (the id the lb set for the user's request),
/// so that one id follows one request into the database tier. An id that
/// is not 1 to 128 characters of letters, digits, `-`, `_` and `.` is not
/// sent. Not the idempotency id of [`Client::execute_once`](crate::Client::execute_once): this one is
/// for logs only and never changes what a request does.
pub async fn with_x_request_id<F: std::future::Future>(id: Option<&str>, work: F) -> F::Output {
    let valid = id.filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    });
    X_REQUEST_ID.scope(valid.map(Arc::from), work).await
}

/// The extra header of a request made inside [`with_x_request_id`]; empty
/// (no allocation) outside it.
pub(super) fn x_request_id_header() -> Vec<(&'static str, String)> {
    X_REQUEST_ID
        .try_with(|id| id.as_ref().map(|id| vec![("x-request-id", id.to_string())]))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A new idempotency id: unique across processes and calls (process id,
/// time, a counter and 64 random bits from the std hasher's random keys).
pub(super) fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(nanos);
    format!("c-{:x}-{:x}-{n:x}-{:016x}", std::process::id(), nanos, h.finish())
}
