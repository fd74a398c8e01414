//! The sidecar's fuzz targets over their committed corpora and mutations of
//! them, on every test run (see `leasehold_testkit::fuzz`).

use leasehold_server::fuzz;
use leasehold_testkit::fuzz::drive;

#[test]
fn lock_body_corpus() {
    drive("lock_body", fuzz::lock_body);
}

#[test]
fn proto_messages_corpus() {
    drive("proto_messages", fuzz::proto_messages);
}

#[test]
fn grpc_service_corpus() {
    drive("grpc_service", fuzz::grpc_service);
}

#[test]
fn http_service_corpus() {
    drive("http_service", fuzz::http_service);
}
