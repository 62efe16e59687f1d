//! The conflict rules on the writing side (blind writes, writes of indexed fields, writes and
//! deletes racing a delete), each with a case that must conflict and a case that must not:
//! client `b` commits while client `a`'s transaction (no retries) is still open on its older
//! snapshot, then `a` commits.

#[macro_use]
mod common;

use common::*;
use odb::Error;

async fn blind_write_of_non_indexed_field_never_conflicts(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        |tx| s.ann.set_balance(tx, 1),
        |tx| s.ann.set_balance(tx, 2),
        nothing,
    )
    .await?;
    out.result?;
    // `a` committed last, so its value wins everywhere.
    p.b.flush().await?;
    assert_eq!(p.a.view(|v| s.ann.balance(v))?, 1);
    assert_eq!(p.b.view(|v| s.ann.balance(v))?, 1);
    Ok(())
}
both_transports!(
    blind_write_of_non_indexed_field_never_conflicts,
    blind_write_of_non_indexed_field_never_conflicts
);

async fn indexed_write_conflicts_with_changes_to_its_index_fields(
    t: Transport,
) -> anyhow::Result<()> {
    // Composite index (user, day): writing `day` depends on `user`.
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.visit.set_user(tx, "bob".into()),
        |tx| s.visit.set_day(tx, 5),
    )
    .await?;
    assert_conflict(&out.result, out.b_tid, "field user of bank.Visit");
    assert_eq!(p.a.view(|v| s.visit.get(v))?, visit("bob", 3, 0));

    // A field outside the index: no conflict, and the index follows both commits.
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.visit.set_count(tx, 7),
        |tx| s.visit.set_day(tx, 5),
    )
    .await?;
    out.result?;
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert_eq!(s.visit.get(v)?, visit("ann", 5, 7));
            assert_eq!(
                Visit::lookup_all_by_user_day(v, ("ann".to_string(), 5u32))?,
                vec![s.visit]
            );
            assert!(Visit::lookup_all_by_user_day(v, ("ann".to_string(), 3u32))?.is_empty());
            Ok::<_, odb::Error>(())
        })?;
    }

    // Single-field index: two blind writes of the indexed field conflict.
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.ann.set_owner(tx, "dave".into()),
        |tx| s.ann.set_owner(tx, "carol".into()),
    )
    .await?;
    assert_conflict(&out.result, out.b_tid, "field owner of bank.Account");
    p.a.view(|v| {
        assert_eq!(Account::lookup_all_by_owner(v, "dave")?, vec![s.ann]);
        assert!(Account::lookup_all_by_owner(v, "carol")?.is_empty());
        Ok::<_, odb::Error>(())
    })?;
    Ok(())
}
both_transports!(
    indexed_write_conflicts_with_changes_to_its_index_fields,
    indexed_write_conflicts_with_changes_to_its_index_fields
);

async fn any_write_conflicts_with_a_concurrent_delete(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.ann.delete(tx),
        |tx| s.ann.set_balance(tx, 5),
    )
    .await?;
    let what = format!("the existence of bank.Account object {}", s.ann.id());
    assert_conflict(&out.result, out.b_tid, &what);
    // No orphan field resurrected the deleted object.
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert!(!s.ann.exists(v)?);
            assert!(matches!(
                s.ann.balance(v),
                Err(Error::ObjectDoesNotExist { .. })
            ));
            assert_eq!(Account::lookup_all(v)?, vec![s.bob, s.zed]);
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}
both_transports!(
    any_write_conflicts_with_a_concurrent_delete,
    any_write_conflicts_with_a_concurrent_delete
);

async fn write_after_concurrent_delete_is_retried_and_sees_the_delete(
    t: Transport,
) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let retrying = connect(&p.server, t).await?;
    retrying.subscribe(bank::schema()).await?;
    retrying.flush().await?;
    let out = interleave_on(
        &retrying,
        &p,
        nothing,
        |tx| s.ann.delete(tx),
        |tx| s.ann.set_balance(tx, 5),
    )
    .await?;
    assert_eq!(out.attempts, 2, "the conflict is retried once");
    assert!(
        matches!(out.result, Err(Error::ObjectDoesNotExist { .. })),
        "the retry sees the object deleted, got {:?}",
        out.result
    );
    Ok(())
}
both_transports!(
    write_after_concurrent_delete_is_retried_and_sees_the_delete,
    write_after_concurrent_delete_is_retried_and_sees_the_delete
);

async fn write_is_unaffected_by_deleting_another_object(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.bob.delete(tx),
        |tx| s.ann.set_balance(tx, 5),
    )
    .await?;
    out.result?;
    assert_eq!(p.a.view(|v| s.ann.balance(v))?, 5);
    Ok(())
}
both_transports!(
    write_is_unaffected_by_deleting_another_object,
    write_is_unaffected_by_deleting_another_object
);

async fn delete_conflicts_with_a_concurrent_delete(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(&p, nothing, |tx| s.ann.delete(tx), |tx| s.ann.delete(tx)).await?;
    let what = format!("bank.Account object {}", s.ann.id());
    assert_conflict(&out.result, out.b_tid, &what);
    Ok(())
}
both_transports!(
    delete_conflicts_with_a_concurrent_delete,
    delete_conflicts_with_a_concurrent_delete
);

async fn delete_conflicts_with_indexed_field_changes_only(t: Transport) -> anyhow::Result<()> {
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.ann.set_owner(tx, "carol".into()),
        |tx| s.ann.delete(tx),
    )
    .await?;
    assert_conflict(&out.result, out.b_tid, "field owner of bank.Account");
    assert_eq!(
        p.a.view(|v| Account::lookup_all_by_owner(v, "carol"))?,
        vec![s.ann]
    );

    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.visit.set_day(tx, 4),
        |tx| s.visit.delete(tx),
    )
    .await?;
    assert_conflict(&out.result, out.b_tid, "field day of bank.Visit");
    assert!(p.a.view(|v| s.visit.exists(v))?);

    // A non-indexed field changed meanwhile: the delete goes through.
    let (p, s) = bank(t).await?;
    let out = interleave(
        &p,
        nothing,
        |tx| s.ann.set_balance(tx, 0),
        |tx| s.ann.delete(tx),
    )
    .await?;
    out.result?;
    p.b.flush().await?;
    for c in [&p.a, &p.b] {
        c.view(|v| {
            assert!(!s.ann.exists(v)?);
            assert!(Account::lookup_all_by_owner(v, "ann")?.is_empty());
            Ok::<_, odb::Error>(())
        })?;
    }
    Ok(())
}
both_transports!(
    delete_conflicts_with_indexed_field_changes_only,
    delete_conflicts_with_indexed_field_changes_only
);
