//! Property tests: every message survives encode/decode, and no byte string panics the decoder.

use bytes::Bytes;
use odb_wire::limits::Limit;
use odb_wire::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}
fn oid() -> impl Strategy<Value = ObjectId> {
    any::<u64>().prop_map(ObjectId)
}
fn fid() -> impl Strategy<Value = FieldId> {
    any::<u32>().prop_map(FieldId)
}
fn iid() -> impl Strategy<Value = IndexId> {
    any::<u32>().prop_map(IndexId)
}
fn rid() -> impl Strategy<Value = RequestId> {
    any::<u64>().prop_map(RequestId)
}
fn tid() -> impl Strategy<Value = Tid> {
    any::<u64>().prop_map(Tid)
}
fn block() -> impl Strategy<Value = IdBlock> {
    (any::<u64>(), any::<u64>()).prop_map(|(start, len)| IdBlock { start, len })
}
fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        (oid(), fid()).prop_map(|(o, f)| Key::Field(o, f)),
        (iid(), bytes()).prop_map(|(i, v)| Key::Index(i, v)),
    ]
}
fn field_write() -> impl Strategy<Value = FieldWrite> {
    (oid(), fid(), proptest::option::of(bytes())).prop_map(|(object, field, value)| FieldWrite {
        object,
        field,
        value,
    })
}
fn index_write() -> impl Strategy<Value = IndexWrite> {
    (oid(), iid(), proptest::option::of(bytes())).prop_map(|(object, index, value)| IndexWrite {
        object,
        index,
        value,
    })
}
fn schema_def() -> impl Strategy<Value = SchemaDef> {
    let index = (".*", vec(".*", 0..3)).prop_map(|(name, fields)| IndexDef { name, fields });
    let ty =
        (".*", vec(".*", 0..4), vec(index, 0..3)).prop_map(|(name, fields, indices)| TypeDef {
            name,
            fields,
            indices,
        });
    (".*", vec(ty, 0..3)).prop_map(|(name, types)| SchemaDef { name, types })
}
fn schema_ids() -> impl Strategy<Value = SchemaIds> {
    let ty = (
        any::<u32>(),
        fid(),
        iid(),
        vec(fid(), 0..4),
        vec(iid(), 0..3),
    )
        .prop_map(|(t, exists_field, all_index, fields, indices)| TypeIds {
            type_id: TypeId(t),
            exists_field,
            all_index,
            fields,
            indices,
        });
    (".*", vec(ty, 0..3)).prop_map(|(name, types)| SchemaIds { name, types })
}
fn target() -> impl Strategy<Value = SubscriptionTarget> {
    prop_oneof![
        any::<u32>().prop_map(|t| SubscriptionTarget::Type(TypeId(t))),
        (iid(), bytes()).prop_map(|(index, value)| SubscriptionTarget::Index { index, value }),
        oid().prop_map(SubscriptionTarget::Object),
    ]
}
fn object_data() -> impl Strategy<Value = ObjectData> {
    (
        oid(),
        vec((fid(), bytes()), 0..4),
        vec((iid(), bytes()), 0..3),
    )
        .prop_map(|(id, fields, indices)| ObjectData {
            id,
            fields,
            indices,
        })
}
fn commit_request() -> impl Strategy<Value = CommitRequest> {
    (
        tid(),
        vec(field_write(), 0..4),
        vec(index_write(), 0..4),
        vec(oid(), 0..3),
        vec((oid(), fid()), 0..4),
        vec((iid(), bytes()), 0..3),
        option::of(commit_id()),
    )
        .prop_map(
            |(base_tid, writes, index_writes, deletes, reads, index_reads, commit_id)| {
                CommitRequest {
                    base_tid,
                    writes,
                    index_writes,
                    deletes,
                    reads,
                    index_reads,
                    commit_id,
                }
            },
        )
}

fn commit_id() -> impl Strategy<Value = CommitId> {
    prop_oneof![
        (any::<u128>(), any::<u64>()).prop_map(|(session, seq)| CommitId { session, seq }),
        (0u128..300, 0u64..300).prop_map(|(session, seq)| CommitId { session, seq }),
    ]
}
fn commit_data() -> impl Strategy<Value = CommitData> {
    (
        tid(),
        vec(field_write(), 0..4),
        vec(index_write(), 0..4),
        vec(oid(), 0..3),
    )
        .prop_map(|(tid, writes, index_writes, deletes)| CommitData {
            tid,
            writes,
            index_writes,
            deletes,
        })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (any::<u32>(), ".*", ".*", any::<u32>()).prop_map(
            |(protocol_version, token, client_name, oldest_protocol_version)| {
                ClientMessage::Hello {
                    protocol_version,
                    token,
                    client_name,
                    oldest_protocol_version,
                }
            }
        ),
        (rid(), schema_def())
            .prop_map(|(request_id, schema)| ClientMessage::DefineSchema { request_id, schema }),
        (rid(), any::<u64>())
            .prop_map(|(request_id, count)| ClientMessage::RequestIds { request_id, count }),
        (rid(), vec(target(), 0..4)).prop_map(|(request_id, targets)| ClientMessage::Subscribe {
            request_id,
            targets
        }),
        (rid(), vec(target(), 0..4)).prop_map(|(request_id, targets)| ClientMessage::Unsubscribe {
            request_id,
            targets
        }),
        (rid(), commit_request())
            .prop_map(|(request_id, commit)| ClientMessage::Commit { request_id, commit }),
        rid().prop_map(|request_id| ClientMessage::Flush { request_id }),
        Just(ClientMessage::Heartbeat),
        (
            rid(),
            vec(target(), 0..4),
            vec(block(), 0..3),
            option::of(tid())
        )
            .prop_map(|(request_id, targets, own, since)| ClientMessage::Resume {
                request_id,
                targets,
                own,
                since
            }),
        (rid(), vec((commit_id(), tid()), 0..4)).prop_map(|(request_id, commits)| {
            ClientMessage::QueryCommits {
                request_id,
                commits,
            }
        }),
    ]
}

fn limit() -> impl Strategy<Value = Limit> {
    proptest::sample::select(Limit::ALL.to_vec())
}

fn outcome() -> impl Strategy<Value = CommitOutcome> {
    prop_oneof![
        tid().prop_map(|tid| CommitOutcome::Committed { tid }),
        (key(), tid()).prop_map(|(key, written_at)| CommitOutcome::Conflict { key, written_at }),
        (tid(), tid()).prop_map(|(base_tid, horizon)| CommitOutcome::TooOld { base_tid, horizon }),
        (".*", option::of(limit()))
            .prop_map(|(reason, limit)| CommitOutcome::Invalid { reason, limit }),
        ".*".prop_map(|reason| CommitOutcome::StorageUnavailable { reason }),
        ".*".prop_map(|reason| CommitOutcome::OutcomeUnknown { reason }),
        tid().prop_map(|tid| CommitOutcome::AlreadyApplied { tid }),
        tid().prop_map(|tid| CommitOutcome::CommittedAsSent { tid }),
    ]
}

fn commit_status() -> impl Strategy<Value = CommitStatus> {
    prop_oneof![
        tid().prop_map(|tid| CommitStatus::Applied { tid }),
        Just(CommitStatus::NotApplied),
        Just(CommitStatus::Unknown),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let reject = prop_oneof![
        Just(Refusal::Unauthorized),
        (any::<u32>(), any::<u32>())
            .prop_map(|(server, oldest)| Refusal::ProtocolVersion { server, oldest }),
        ".*".prop_map(|detail| Refusal::NotHello { detail }),
        any::<u64>().prop_map(|after_ms| Refusal::HelloTimeout { after_ms }),
        any::<u64>().prop_map(|limit| Refusal::ServerFull { limit }),
        ".*".prop_map(|detail| Refusal::StorageUnavailable { detail }),
        Just(Refusal::ShuttingDown),
        (any::<u64>(), any::<u64>())
            .prop_map(|(queued, limit)| Refusal::SlowReader { queued, limit }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(queued, budget)| Refusal::OutboundBudget { queued, budget }),
    ];
    prop_oneof![
        (
            any::<u32>(),
            oid(),
            block(),
            tid(),
            any::<u64>(),
            any::<u64>(),
            any::<u128>()
        )
            .prop_map(
                |(protocol_version, connection, ids, tid, heartbeat_interval_ms, max_frame, db)| {
                    ServerMessage::Welcome {
                        protocol_version,
                        connection,
                        ids,
                        tid,
                        heartbeat_interval_ms,
                        max_frame,
                        database: DatabaseId(db),
                    }
                }
            ),
        reject
            .clone()
            .prop_map(|reason| ServerMessage::Rejected { reason }),
        (rid(), schema_ids())
            .prop_map(|(request_id, schema)| ServerMessage::SchemaDefined { request_id, schema }),
        (rid(), block()).prop_map(|(request_id, block)| ServerMessage::Ids { request_id, block }),
        (rid(), vec(object_data(), 0..3)).prop_map(|(request_id, objects)| {
            ServerMessage::SubscriptionData {
                request_id,
                objects: objects.into(),
            }
        }),
        (rid(), tid())
            .prop_map(|(request_id, tid)| ServerMessage::SubscriptionComplete { request_id, tid }),
        (rid(), tid(), vec(oid(), 0..4)).prop_map(|(request_id, tid, dropped)| {
            ServerMessage::Unsubscribed {
                request_id,
                tid,
                dropped,
            }
        }),
        commit_data().prop_map(ServerMessage::Commit),
        (rid(), outcome()).prop_map(|(request_id, outcome)| ServerMessage::CommitResult {
            request_id,
            outcome
        }),
        (rid(), tid()).prop_map(|(request_id, tid)| ServerMessage::Flushed { request_id, tid }),
        (rid(), ".*", option::of(limit())).prop_map(|(request_id, reason, limit)| {
            ServerMessage::RequestFailed {
                request_id,
                reason,
                limit,
            }
        }),
        reject
            .clone()
            .prop_map(|reason| ServerMessage::Closing { reason }),
        Just(ServerMessage::Heartbeat),
        (rid(), tid(), any::<bool>(), vec(block(), 0..3)).prop_map(
            |(request_id, tid, delta, visible)| ServerMessage::Resumed {
                request_id,
                tid,
                delta,
                visible
            }
        ),
        (rid(), vec(commit_status(), 0..4)).prop_map(|(request_id, statuses)| {
            ServerMessage::CommitStatuses {
                request_id,
                statuses,
            }
        }),
    ]
}

/// A message's fast decoder decodes its encoding, and agrees with the generic decoder on the
/// encoding with one byte damaged (at `flip`, by xor with `bits`) and cut short there.
fn fast_decoder_agrees<T>(
    fast: fn(&[u8]) -> Result<T, CodecError>,
    msg: T,
    flip: prop::sample::Index,
    bits: u8,
) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let payload = encode(&msg).unwrap();
    prop_assert_eq!(fast(&payload).unwrap(), msg);
    let mut damaged = payload.to_vec();
    let at = flip.index(damaged.len());
    damaged[at] ^= bits;
    prop_assert_eq!(fast(&damaged).ok(), decode::<T>(&damaged).ok());
    prop_assert_eq!(fast(&payload[..at]).ok(), decode::<T>(&payload[..at]).ok());
    Ok(())
}

proptest! {
    #[test]
    fn every_client_message_round_trips(msg in client_message()) {
        let bytes = encode(&msg).unwrap();
        prop_assert_eq!(decode::<ClientMessage>(&bytes).unwrap(), msg);
    }

    #[test]
    fn every_server_message_round_trips(msg in server_message()) {
        let bytes = encode(&msg).unwrap();
        prop_assert_eq!(decode::<ServerMessage>(&bytes).unwrap(), msg);
    }

    #[test]
    fn the_client_message_encoder_agrees_with_serde(msg in client_message()) {
        prop_assert_eq!(encode_client_message(&msg).unwrap(), encode(&msg).unwrap());
    }

    #[test]
    fn the_client_message_decoder_agrees_with_the_generic_one(
        msg in client_message(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..,
    ) {
        fast_decoder_agrees(decode_client_message, msg, flip, bits)?;
    }

    #[test]
    fn the_server_message_decoder_agrees_with_the_generic_one(
        msg in server_message(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..,
    ) {
        fast_decoder_agrees(decode_server_message, msg, flip, bits)?;
    }

    #[test]
    fn the_client_frame_decoder_agrees_with_the_generic_one(
        msg in client_message(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..,
    ) {
        let from_frame = |p: &[u8]| decode_client_frame(&Bytes::copy_from_slice(p));
        fast_decoder_agrees(from_frame, msg, flip, bits)?;
    }

    #[test]
    fn the_server_frame_decoder_agrees_with_the_generic_one(
        msg in server_message(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..,
    ) {
        let from_frame = |p: &[u8]| decode_server_frame(&Bytes::copy_from_slice(p));
        fast_decoder_agrees(from_frame, msg, flip, bits)?;
    }

    #[test]
    fn the_push_encoder_writes_what_serde_writes(data in commit_data(), big in vec(any::<u8>(), 250..300)) {
        let mut data = data;
        // Values and lengths around the one-byte varint limit.
        if let Some(w) = data.writes.first_mut() {
            w.value = Some(Bytes::from(big));
        }
        let expected = encode(&ServerMessage::Commit(data.clone())).unwrap();
        let pushed = encode_commit_push(data.tid, 0, |sink| {
            for w in &data.writes {
                sink(PushEntry::Field(w.object, w.field, w.value.as_deref()));
            }
            for w in &data.index_writes {
                sink(PushEntry::Index(w.object, w.index, w.value.as_deref()));
            }
            for &d in &data.deletes {
                sink(PushEntry::Delete(d));
            }
        })
        .unwrap();
        prop_assert_eq!(pushed, expected);
    }

    #[test]
    fn subscription_chunks_are_what_serde_writes(
        request_id in rid(),
        objects in vec(object_data(), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let encoded: EncodedObjects = objects.clone().into();
        prop_assert_eq!(encoded.len(), objects.len());
        // Any split of the objects into two chunks.
        let at = cut.index(objects.len() + 1);
        for range in [0..at, at..objects.len()] {
            let expected = encode(&ServerMessage::SubscriptionData {
                request_id,
                objects: objects[range.clone()].to_vec().into(),
            })
            .unwrap();
            prop_assert_eq!(encoded.chunk(request_id, range).unwrap(), expected);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in vec(any::<u8>(), 0..512)) {
        let _ = decode::<ClientMessage>(&data);
        let _ = decode::<ServerMessage>(&data);
    }

    #[test]
    fn truncated_messages_are_errors(msg in client_message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&msg).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(decode::<ClientMessage>(&bytes[..cut]).is_err());
    }
}

#[test]
fn a_huge_length_prefix_inside_a_payload_is_an_error_not_an_allocation() {
    // Variant index of `Commit`, a request id, then a base tid and a vec length of 2^62.
    let mut payload = vec![4u8, 1, 0];
    payload.push(0xFF);
    payload.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode::<ClientMessage>(&payload).is_err());
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&ClientMessage::Heartbeat).unwrap().to_vec();
    bytes.push(0);
    assert!(matches!(
        decode::<ClientMessage>(&bytes),
        Err(CodecError::Trailing(1))
    ));
}

#[test]
fn a_small_frame_cannot_claim_a_large_allocation() {
    // A Hello whose token announces 1 GiB: refused by the decode limit, not allocated.
    let mut payload = vec![0u8, 1];
    payload.push(0xFC);
    payload.extend_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(matches!(
        decode::<ClientMessage>(&payload),
        Err(CodecError::Decode(reason)) if reason.contains("Limit")
    ));
}
