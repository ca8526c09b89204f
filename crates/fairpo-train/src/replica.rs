//! Data parallelism: one worker thread per device, joined by burn's collective all-reduce
//! (`burn::collective`). Every replica holds the same policy and optimiser state; per step
//! each trains on its shard of the global batch, the objective's counts, the group losses and
//! the gradients are summed over the replicas, and every replica then applies the same
//! update. Rank 0 writes the run's files.

use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorPrimitive;

/// One worker of a data-parallel run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replica {
    /// 0-based; rank 0 writes logs and checkpoints.
    pub rank: usize,
    /// Number of replicas.
    pub world: usize,
}

impl Replica {
    /// The only worker of an ordinary run.
    pub const SINGLE: Replica = Replica { rank: 0, world: 1 };

    /// Whether this worker writes the run's files.
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    /// Whether there are other replicas to reduce with.
    pub fn is_parallel(&self) -> bool {
        self.world > 1
    }

    fn peer(&self) -> PeerId {
        PeerId::from(self.rank as u32)
    }

    /// This replica's rows of a global batch of `len` rows: contiguous, sizes differing by at
    /// most one (`floor(len·rank/world) .. floor(len·(rank+1)/world)`).
    pub fn shard(&self, len: usize) -> std::ops::Range<usize> {
        (len * self.rank / self.world)..(len * (self.rank + 1) / self.world)
    }

    /// `values` summed over every replica (identity for a single one). Every replica gets the
    /// same result. Values travel as f32.
    pub fn sum<B: Backend, const N: usize>(
        &self,
        values: [f64; N],
        device: &B::Device,
    ) -> Result<[f64; N]> {
        if !self.is_parallel() {
            return Ok(values);
        }
        let t = Tensor::<B, 1>::from_data(TensorData::new(values.to_vec(), [N]), device);
        let reduced = collective::all_reduce::<B>(
            self.peer(),
            t.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| anyhow!("all-reduce across the devices failed: {e:?}"))?;
        let v: Vec<f64> = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(reduced))
            .into_data()
            .iter::<f64>()
            .collect();
        v.try_into()
            .map_err(|v: Vec<f64>| anyhow!("all-reduce returned {} values, sent {N}", v.len()))
    }

    /// Rank 0's `value`, the same on every replica (rank 0 included) and within ~1e-14 of
    /// it: sent as an f32 plus the f32 of its remainder, the other replicas adding zeros.
    pub fn from_lead<B: Backend>(&self, value: f64, device: &B::Device) -> Result<f64> {
        if !self.is_parallel() {
            return Ok(value);
        }
        let parts = if self.leads() {
            let high = f64::from(value as f32);
            [high, value - high]
        } else {
            [0.0; 2]
        };
        let [high, low] = self.sum::<B, 2>(parts, device)?;
        Ok(if high.is_finite() { high + low } else { high })
    }

    /// Whether any replica says `flag` (a Ctrl-C seen by one worker stops them all at the
    /// same step).
    pub fn any<B: Backend>(&self, flag: bool, device: &B::Device) -> Result<bool> {
        Ok(self.sum::<B, 1>([f64::from(u8::from(flag))], device)?[0] > 0.0)
    }

    /// The gradients summed over every replica (`GradientsParams::all_reduce`).
    pub fn sum_gradients<B: AutodiffBackend>(
        &self,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        if !self.is_parallel() {
            return Ok(grads);
        }
        grads
            .all_reduce::<B::InnerBackend>(self.peer(), ReduceOperation::Sum)
            .map_err(|e| anyhow!("all-reduce of the gradients failed: {e:?}"))
    }
}

/// `module` with its parameters numbered 1, 2, … in visiting order. burn draws a parameter's
/// id at random when it is created, and `GradientsParams::all_reduce` pairs the replicas'
/// gradients by id, so every replica numbers its freshly built policy the same way (a
/// checkpoint's ids, loaded by every replica alike, are kept).
pub fn number_parameters<B: Backend, M: Module<B>>(module: M) -> M {
    struct Number(u64);
    impl<B: Backend> ModuleMapper<B> for Number {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            self.0 += 1;
            let (_, tensor, mapper) = param.consume();
            Param::from_mapped_value(ParamId::from(self.0), tensor, mapper)
        }
    }
    module.map(&mut Number(0))
}

/// Zero gradients for every trainable parameter of `module`: what a replica whose shard of
/// the global batch is empty contributes to the all-reduce.
pub(crate) fn zero_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
) -> GradientsParams {
    struct Zeros(GradientsParams);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Zeros {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            if value.is_require_grad() {
                self.0.register(param.id, value.inner().zeros_like());
            }
        }
    }
    let mut z = Zeros(GradientsParams::new());
    module.visit(&mut z);
    z.0
}

/// Runs `work(replica, device)` on one thread per device, each registered as a peer of burn's
/// collective, and returns rank 0's result. When a worker fails, the collective is reset so
/// that the others, waiting in an all-reduce, fail too instead of waiting forever; the first
/// failure is the error returned.
pub fn run_replicas<B, T, F>(devices: Vec<B::Device>, work: F) -> Result<T>
where
    B: AutodiffBackend,
    T: Send,
    F: Fn(Replica, B::Device) -> Result<T> + Sync,
{
    let world = devices.len();
    if world == 0 {
        bail!("no device to train on");
    }
    if world == 1 {
        let device = devices.into_iter().next().expect("one device");
        return work(Replica::SINGLE, device);
    }
    collective::reset_collective::<B::InnerBackend>();
    let config = CollectiveConfig::default().with_num_devices(world);
    let (tx, rx) = mpsc::channel::<(usize, Result<T>)>();
    let mut results: Vec<Option<Result<T>>> = (0..world).map(|_| None).collect();
    let mut first_failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        for (rank, device) in devices.into_iter().enumerate() {
            let tx = tx.clone();
            let work = &work;
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("fairpo-replica-{rank}"))
                .spawn_scoped(scope, move || {
                    let replica = Replica { rank, world };
                    let result = collective::register::<B::InnerBackend>(
                        replica.peer(),
                        device.clone(),
                        config,
                    )
                    .map_err(|e| anyhow!("registering device {rank} with the collective: {e:?}"))
                    .and_then(|()| work(replica, device))
                    .with_context(|| format!("replica {rank} of {world}"));
                    let _ = tx.send((rank, result));
                })
                .expect("spawning a replica thread");
        }
        drop(tx);
        for (rank, result) in rx {
            if let Err(e) = &result {
                if first_failure.is_none() {
                    // The others may be waiting for this one in an all-reduce.
                    collective::reset_collective::<B::InnerBackend>();
                    first_failure = Some(anyhow!("{e:#}"));
                }
            }
            results[rank] = Some(result);
        }
    });
    if let Some(e) = first_failure {
        return Err(e);
    }
    for rank in 0..world {
        // Every peer registered; unregister them so a later run in this process starts clean.
        let _ = collective::finish_collective::<B::InnerBackend>(PeerId::from(rank as u32));
    }
    collective::reset_collective::<B::InnerBackend>();
    results[0]
        .take()
        .expect("every replica reported")
        .context("replica 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_a_batch_once_in_order() {
        for world in 1..5 {
            for len in 0..12 {
                let mut next = 0;
                for rank in 0..world {
                    let r = Replica { rank, world }.shard(len);
                    assert_eq!(r.start, next);
                    assert!(r.len() <= len.div_ceil(world));
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
