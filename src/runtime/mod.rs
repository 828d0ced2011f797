//! The I/O edges around the pure core: the live policy store and its reload path, the metrics
//! endpoint, and the `serve` loop that ties them together.

pub mod escape;
pub mod http;
pub mod indexer;
pub mod listen;
pub mod notify;
pub mod record;
pub mod reload;
pub mod secret;
pub mod serve;
pub mod status;
pub mod store;

/// Today's date in the server's local time zone: `until` dates are calendar dates as the admin
/// means them where the server runs.
pub fn today() -> jiff::civil::Date {
    jiff::Zoned::now().date()
}
