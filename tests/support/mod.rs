pub mod mongo;
// Not every test binary starts every service.
#[allow(dead_code)]
pub mod redis;
