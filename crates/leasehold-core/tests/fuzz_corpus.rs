//! The component loader's fuzz target over its committed corpus and
//! mutations of it, on every test run (see `leasehold_testkit::fuzz`).

#[test]
fn manifest_corpus() {
    leasehold_testkit::fuzz::drive("manifest", leasehold_core::fuzz::manifest);
}
