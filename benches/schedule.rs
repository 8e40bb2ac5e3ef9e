//! Criterion benches for the noise curriculum (`make bench` runs them).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use r1kit::schedule::{NoiseSchedule, ScheduleKind, Turns};
use r1kit::tensor::TensorPath;
use tch::{Device, Kind, Tensor};

fn draw_noisy(c: &mut Criterion) {
    let schedule = NoiseSchedule::new(0.0, 0.5, 203, 4.0, ScheduleKind::Exponential).unwrap();
    let n = 1_000_000;
    let keys = Tensor::arange(n, (Kind::Int64, Device::Cpu));
    let mut group = c.benchmark_group("draw_noisy_1M");
    group.throughput(Throughput::Elements(n as u64));
    for (name, path) in [
        ("cpu_path", TensorPath::Cpu),
        ("device_path_on_cpu", TensorPath::Device),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                schedule
                    .draw_noisy(100, &keys, &Turns::All(0), 0, path)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, draw_noisy);
criterion_main!(benches);
