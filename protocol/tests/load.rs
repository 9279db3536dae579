//! Load: one hub and 1,000 concurrent live clients over loopback, mixed raw TCP and
//! WebSocket, all writing. Nothing is lost, all converge, the hub keeps serving.

#[path = "load/scenario.rs"]
mod scenario;

#[test]
fn a_thousand_live_clients_all_writing_converge() {
    let clients: usize = std::env::var("LOAD_CLIENTS").map_or(1_000, |v| v.parse().unwrap());
    let r = scenario::run(clients, 1);
    // The run did the work it claims: every write reached every replica.
    assert_eq!(r.written, clients as u64);
    assert_eq!(r.delivered, r.written * clients as u64);
    eprintln!(
        "{} clients connected in {:?}; {} events written, {} deliveries in {:?}: {:.0} events/s \
         through the hub",
        r.clients,
        r.connect,
        r.written,
        r.delivered,
        r.elapsed,
        r.per_second()
    );
}
