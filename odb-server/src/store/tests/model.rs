//! The store against a plain model, under random commits, journaled roll-backs and a short
//! conflict history.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

type ModelObj = (BTreeMap<FieldId, Bytes>, BTreeMap<IndexId, Bytes>);

#[derive(Clone, Default)]
struct Model {
    objs: BTreeMap<u64, ModelObj>,
    last: HashMap<Key, Tid>,
    values: BTreeSet<(IndexId, Bytes)>,
}

impl Model {
    fn members(&self) -> BTreeMap<(IndexId, Bytes), BTreeSet<u64>> {
        let mut m: BTreeMap<(IndexId, Bytes), BTreeSet<u64>> = BTreeMap::new();
        for (o, (_, idx)) in &self.objs {
            for (i, v) in idx {
                m.entry((*i, v.clone())).or_default().insert(*o);
            }
        }
        m
    }
}

const VALUES: [&str; 7] = [
    "",
    "x",
    "y",
    "item-0000000000000000000001",
    "item-0000000000000000000002",
    "zz",
    "0123456789012345678",
];

fn pick(rng: &mut Rng) -> Option<Bytes> {
    if rng.chance(15) {
        None
    } else {
        Some(b(VALUES[rng.below(VALUES.len() as u64) as usize]))
    }
}

fn check(f: &Fixture, model: &Model, ctx: &str) {
    assert_eq!(f.store.object_count(), model.objs.len(), "{ctx}: count");
    for (o, (fields, idx)) in &model.objs {
        let data = f
            .store
            .object_data(ObjectId(*o))
            .unwrap_or_else(|| panic!("{ctx}: object {o} missing"));
        let want_f: Vec<(FieldId, Bytes)> = fields.iter().map(|(k, v)| (*k, v.clone())).collect();
        let want_i: Vec<(IndexId, Bytes)> = idx.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(data.fields, want_f, "{ctx}: fields of {o}");
        assert_eq!(data.indices, want_i, "{ctx}: indices of {o}");
    }
    let members = model.members();
    for (i, v) in &model.values {
        let got: Vec<u64> = f.store.members(*i, v).map(|o| o.0).collect();
        let want: Vec<u64> = members
            .get(&(*i, v.clone()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        assert_eq!(got, want, "{ctx}: members of {i}/{v:?}");
    }
    let horizon = f.store.horizon();
    for (key, tid) in &model.last {
        if *tid > horizon {
            let got = f.store.last_write(key);
            assert!(
                got >= *tid,
                "{ctx}: missed conflict on {key:?}: store {got}, model {tid}"
            );
        }
    }
    assert_eq!(
        f.store.history.live_count(),
        stamps_held(f),
        "{ctx}: live stamps"
    );
}

/// How many stamps the objects' fields and the index values hold that the conflict history
/// still counts: what its live stamp count must be.
fn stamps_held(f: &Fixture) -> u64 {
    let counts = |t: Tid| u64::from(f.store.history.counts(t));
    let fields: u64 = f
        .store
        .objects
        .iter()
        .flat_map(|l| l.obj.field_slots())
        .map(|s| counts(s.stamp))
        .sum();
    let values: u64 = f.store.members.iter().map(|v| counts(v.stamp())).sum();
    fields + values
}

/// Applies `req` (which succeeded at `tid`) to the model.
fn apply_model(f: &Fixture, model: &mut Model, req: &CommitRequest, tid: Tid) {
    let before = model.members();
    let mut ids: BTreeSet<u64> = req.writes.iter().map(|w| w.object.0).collect();
    ids.extend(req.index_writes.iter().map(|w| w.object.0));
    ids.extend(req.deletes.iter().map(|o| o.0));
    for o in ids {
        let created = !model.objs.contains_key(&o);
        let mut obj = model.objs.remove(&o).unwrap_or_default();
        if created {
            obj.1.insert(f.t.all_index, Bytes::new());
        }
        let mut order: Vec<&FieldWrite> = req.writes.iter().filter(|w| w.object.0 == o).collect();
        order.sort_by_key(|w| w.field);
        for w in order {
            model.last.insert(Key::Field(ObjectId(o), w.field), tid);
            match &w.value {
                Some(v) => obj.0.insert(w.field, v.clone()),
                None => obj.0.remove(&w.field),
            };
        }
        let mut order: Vec<&IndexWrite> = req
            .index_writes
            .iter()
            .filter(|w| w.object.0 == o)
            .collect();
        order.sort_by_key(|w| w.index);
        for w in order {
            match &w.value {
                Some(v) => obj.1.insert(w.index, v.clone()),
                None => obj.1.remove(&w.index),
            };
        }
        if req.deletes.contains(&ObjectId(o)) {
            for fld in obj.0.keys() {
                model.last.insert(Key::Field(ObjectId(o), *fld), tid);
            }
        } else {
            model.objs.insert(o, obj);
        }
    }
    let after = model.members();
    let keys: BTreeSet<&(IndexId, Bytes)> = before.keys().chain(after.keys()).collect();
    for k in keys {
        model.values.insert(k.clone());
        if before.get(k) != after.get(k) {
            model.last.insert(Key::Index(k.0, k.1.clone()), tid);
        }
    }
}

fn random_commit(f: &Fixture, model: &Model, rng: &mut Rng, next_id: &mut u64) -> CommitRequest {
    let (a, bf, by_a) = (f.t.fields[0], f.t.fields[1], f.t.indices[0]);
    let mut req = CommitRequest {
        base_tid: f.store.tid(),
        ..CommitRequest::default()
    };
    let live: Vec<u64> = model.objs.keys().copied().collect();
    let ops = 1 + rng.below(12);
    for _ in 0..ops {
        match rng.below(10) {
            0 | 1 => {
                let o = *next_id;
                *next_id += 1 + rng.below(2);
                req.writes.push(write(o, f.t.exists_field, Some("")));
                let v = VALUES[rng.below(VALUES.len() as u64) as usize];
                req.writes.push(write(o, a, Some(v)));
                if rng.chance(70) {
                    req.index_writes.push(index(o, by_a, Some(v)));
                }
            }
            2 if !live.is_empty() => {
                let o = live[rng.below(live.len() as u64) as usize];
                req.deletes.push(ObjectId(o));
            }
            3..=5 if !live.is_empty() => {
                let o = live[rng.below(live.len() as u64) as usize];
                let fld = if rng.chance(50) { a } else { bf };
                req.writes.push(FieldWrite {
                    object: ObjectId(o),
                    field: fld,
                    value: pick(rng),
                });
            }
            _ if !live.is_empty() => {
                let o = live[rng.below(live.len() as u64) as usize];
                req.index_writes.push(IndexWrite {
                    object: ObjectId(o),
                    index: by_a,
                    value: pick(rng),
                });
            }
            _ => {}
        }
    }
    // shuffle sometimes
    if rng.chance(50) {
        for i in (1..req.writes.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            req.writes.swap(i, j);
        }
        for i in (1..req.index_writes.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            req.index_writes.swap(i, j);
        }
    }
    req
}

fn run(seed: u64, steps: usize, history: u64) {
    let mut f = fixture();
    f.store.set_limits(Limits {
        conflict_history: history,
        ..Limits::default()
    });
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut next_id = 1u64;
    let mut saved: Option<(Model, Tid)> = None;
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        if saved.is_none() && rng.chance(10) {
            f.store.set_journaling(true);
            saved = Some((model.clone(), f.store.tid()));
        }
        let req = random_commit(&f, &model, &mut rng, &mut next_id);
        let applied = f
            .commit(&req)
            .unwrap_or_else(|e| panic!("{ctx}: {e:?} for {req:?}"));
        // what a Part::Changes push carries for fields: those stamped at this tid
        for t in &applied.objects {
            if let (Some(_), Some(rec)) = (&t.before, f.store.record(t.id)) {
                let pushed: BTreeSet<FieldId> =
                    rec.written_at(applied.tid).map(|(fl, _)| fl).collect();
                let written: BTreeSet<FieldId> = req
                    .writes
                    .iter()
                    .filter(|w| w.object == t.id)
                    .map(|w| w.field)
                    .collect();
                assert_eq!(pushed, written, "{ctx}: pushed fields of {}", t.id);
            }
        }
        apply_model(&f, &mut model, &req, applied.tid);
        check(&f, &model, &ctx);
        if let Some((snapshot, _)) = &saved {
            if rng.chance(25) {
                if rng.chance(50) {
                    f.store.roll_back();
                    // model values stay known; last writes of undone commits need not count
                    let values = model.values.clone();
                    model = snapshot.clone();
                    model.values = values;
                    check(&f, &model, &format!("{ctx} after roll back"));
                } else {
                    f.store.clear_journal();
                }
                f.store.set_journaling(false);
                saved = None;
            }
        }
    }
}

#[test]
fn random_commits_match_a_model() {
    for seed in 0..60 {
        run(seed, 300, u64::MAX);
    }
}

#[test]
fn random_commits_match_a_model_with_a_short_history() {
    for seed in 100..160 {
        run(seed, 300, 3);
    }
}

/// A roll-back restores older stamps; the live stamp count (reported as `conflict_stamps`) must
/// still match the stamps the objects and index values hold.
#[test]
fn a_roll_back_keeps_the_live_stamp_count() {
    let mut f = fixture();
    f.commit(&f.create_t(1, "x")).unwrap();
    f.store.set_journaling(true);
    let req = CommitRequest {
        base_tid: Tid(1),
        writes: vec![write(1, f.t.fields[1], Some("b"))],
        index_writes: vec![index(1, f.t.indices[0], Some("y"))],
        ..CommitRequest::default()
    };
    f.commit(&req).unwrap();
    f.store.roll_back();
    f.store.set_journaling(false);
    for _ in 0..3 {
        let req = CommitRequest {
            base_tid: f.store.tid(),
            writes: vec![write(1, f.t.fields[0], Some("z"))],
            ..CommitRequest::default()
        };
        f.commit(&req).unwrap();
    }
    assert_eq!(f.store.history.live_count(), stamps_held(&f));
}
