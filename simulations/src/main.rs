fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sc = starling_sim::Scenario::load(std::path::Path::new(&args[1])).unwrap();
    let seed: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    let t = std::time::Instant::now();
    let r = starling_sim::run(&sc, seed, starling_sim::RunOptions { progress: false, logs: true });
    println!("{:?} {:?} events={} hash={:x} wall={:?}", r.verdict, r.reasons, r.events, r.trace_hash, t.elapsed());
    for (k, v) in &r.metrics { println!("{k} = {v}"); }
}
