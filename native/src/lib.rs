//! K2's native Kafka consumer: librdkafka (through the `rdkafka` crate) read into column buffers.
//!
//! confluent-kafka builds one Python `Message` per record while holding the GIL; in K2's pipeline
//! that step alone cost about a third of the GIL's time (issue #17). Here a batch is polled with
//! the GIL released and handed to Python as a few `bytes` buffers (partitions, offsets,
//! timestamps, keys and values joined with their end offsets), which NumPy views without a copy.
//!
//! Only the consumer's data path is native. The group life cycle stays Python's: rebalances call
//! one Python callable (`"assign"`, `"revoke"`, `"lost"`) on the polling thread, and the adapter
//! (`k2.pipeline.native`) gives the runner the same surface as confluent-kafka's `Consumer`.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka_sys as rdsys;

create_exception!(
    _native,
    NativeKafkaError,
    PyException,
    "A librdkafka error: args are (code, reason, fatal)."
);

type Part = (String, i32, i64);

/// What librdkafka calls back into, on the thread that polls.
struct Context {
    on_error: Py<PyAny>,
    on_rebalance: Py<PyAny>,
    /// The first exception a rebalance callback raised: re-raised by the poll that ran it.
    raised: Mutex<Option<PyErr>>,
    /// Whether the running rebalance callback assigned or unassigned itself.
    acted: AtomicBool,
    /// A client-wide error went to `on_error`: the poll that returns it next leaves it out of the
    /// batch (a broker down is said once, not in every batch; confluent-kafka delivers such errors
    /// to its error callback only, too).
    reported: AtomicBool,
    /// A rebalance ran during this poll: the messages polled before it are stale (eager assignment
    /// revokes every partition; the callback re-assigns from the lake's watermarks), and are
    /// dropped from the batch, as librdkafka's own batch consume drops outdated messages.
    rebalanced: AtomicBool,
    /// Whether `raised` holds an exception (read per message without the lock).
    has_raised: AtomicBool,
    /// The client, once created: a fatal error's flag is read from it (the error event's is lost).
    rk: AtomicPtr<rdsys::rd_kafka_t>,
}

fn error_code(error: &KafkaError) -> i32 {
    error.rdkafka_error_code().map(|c| c as i32).unwrap_or(-1)
}

fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumptionFatal(_))
        || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal)
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        // The event API hands over the underlying code of a fatal error with its flag, and the crate
        // drops the flag: librdkafka's own record of a fatal error is what tells.
        let rk = self.rk.load(Ordering::SeqCst);
        let fatal_now = !rk.is_null()
            && unsafe { rdsys::rd_kafka_fatal_error(rk, ptr::null_mut(), 0) }
                != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
        let (code, fatal) = (error_code(&error), is_fatal(&error) || fatal_now);
        self.reported.store(true, Ordering::SeqCst);
        Python::with_gil(|py| {
            if let Err(exc) = self.on_error.call1(py, (code, reason, fatal)) {
                exc.print(py);
            }
        });
    }
}

fn parts_of(tpl: &TopicPartitionList) -> Vec<Part> {
    tpl.elements()
        .iter()
        .map(|e| {
            (
                e.topic().to_string(),
                e.partition(),
                e.offset().to_raw().unwrap_or(-1001),
            )
        })
        .collect()
}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        let kind = if assign {
            "assign"
        } else if consumer.assignment_lost() {
            "lost"
        } else {
            "revoke"
        };
        self.acted.store(false, Ordering::SeqCst);
        self.rebalanced.store(true, Ordering::SeqCst);
        let parts = parts_of(tpl);
        Python::with_gil(|py| {
            if let Err(exc) = self.on_rebalance.call1(py, (kind, parts)) {
                let mut raised = self.raised.lock().unwrap();
                if raised.is_none() {
                    *raised = Some(exc);
                    self.has_raised.store(true, Ordering::SeqCst);
                }
            }
        });
        // As confluent-kafka does: a callback that did not (un)assign gets the default.
        if !self.acted.load(Ordering::SeqCst) {
            let rk = consumer.client().native_ptr();
            unsafe {
                if assign {
                    rdsys::rd_kafka_assign(rk, tpl.ptr());
                } else {
                    rdsys::rd_kafka_assign(rk, ptr::null());
                }
            }
        }
    }
}

fn kafka_err(error: KafkaError) -> PyErr {
    NativeKafkaError::new_err((error_code(&error), error.to_string(), is_fatal(&error)))
}

fn resp_err(code: RDKafkaRespErr) -> PyErr {
    let reason = unsafe { std::ffi::CStr::from_ptr(rdsys::rd_kafka_err2str(code)) }
        .to_string_lossy()
        .into_owned();
    NativeKafkaError::new_err((code as i32, reason, false))
}

fn tpl_of(parts: &[Part]) -> PyResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, offset) in parts {
        tpl.add_partition_offset(topic, *partition, Offset::from_raw(*offset))
            .map_err(kafka_err)?;
    }
    Ok(tpl)
}

fn timeout_of(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds.max(0.0))
}

/// One polled batch, column by column.
#[derive(Default)]
struct Columns {
    topics: Vec<String>,
    topic_ptrs: Vec<usize>,
    topic_at: Vec<u16>,
    topic_index: Vec<u16>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    times_ms: Vec<i64>,
    value_ends: Vec<i64>,
    values: Vec<u8>,
    value_null: Vec<u8>,
    key_ends: Vec<i64>,
    keys: Vec<u8>,
    errors: Vec<(i32, String, bool)>,
}

impl Columns {
    fn push(&mut self, m: &BorrowedMessage<'_>) {
        // The topic handle, not its name: a string per message was a tenth of the loop.
        let rkt = m.topic_ptr() as usize;
        let at = match self.topic_ptrs.iter().position(|&t| t == rkt) {
            Some(i) => self.topic_at[i],
            None => {
                let topic = m.topic();
                let i = match self.topics.iter().position(|t| t == topic) {
                    Some(i) => i,
                    None => {
                        self.topics.push(topic.to_string());
                        self.topics.len() - 1
                    }
                };
                self.topic_ptrs.push(rkt);
                self.topic_at.push(i as u16);
                i as u16
            }
        };
        self.topic_index.push(at);
        self.partitions.push(m.partition());
        self.offsets.push(m.offset());
        self.times_ms.push(match m.timestamp() {
            Timestamp::NotAvailable => -1,
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
        });
        match m.payload() {
            Some(v) => {
                self.values.extend_from_slice(v);
                self.value_null.push(0);
            }
            None => self.value_null.push(1),
        }
        self.value_ends.push(self.values.len() as i64);
        if let Some(k) = m.key() {
            self.keys.extend_from_slice(k);
        }
        self.key_ends.push(self.keys.len() as i64);
    }

    fn len(&self) -> usize {
        self.offsets.len()
    }
}

fn le_bytes<'py, T: Copy>(py: Python<'py>, v: &[T]) -> Bound<'py, PyBytes> {
    let bytes =
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) };
    PyBytes::new(py, bytes)
}

/// A librdkafka consumer in a group, polled into column buffers.
#[pyclass(frozen, module = "k2._native")]
struct NativeConsumer {
    inner: Mutex<Option<Arc<BaseConsumer<Context>>>>,
}

impl NativeConsumer {
    fn get(&self) -> PyResult<Arc<BaseConsumer<Context>>> {
        self.inner
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err("Consumer closed"))
    }

    fn reraise(consumer: &BaseConsumer<Context>) -> PyResult<()> {
        let context = consumer.context();
        context.has_raised.store(false, Ordering::SeqCst);
        match context.raised.lock().unwrap().take() {
            Some(exc) => Err(exc),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl NativeConsumer {
    /// `config`: librdkafka properties as strings; `on_error(code, reason, fatal)`;
    /// `on_rebalance(kind, [(topic, partition, offset)])` with kind "assign", "revoke" or "lost".
    #[new]
    fn new(
        config: &Bound<'_, PyDict>,
        on_error: Py<PyAny>,
        on_rebalance: Py<PyAny>,
    ) -> PyResult<Self> {
        let mut conf = ClientConfig::new();
        for (k, v) in config.iter() {
            conf.set(k.extract::<String>()?, v.extract::<String>()?);
        }
        let context = Context {
            on_error,
            on_rebalance,
            raised: Mutex::new(None),
            acted: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            rebalanced: AtomicBool::new(false),
            has_raised: AtomicBool::new(false),
            rk: AtomicPtr::new(ptr::null_mut()),
        };
        let consumer: BaseConsumer<Context> =
            conf.create_with_context(context).map_err(kafka_err)?;
        consumer
            .context()
            .rk
            .store(consumer.client().native_ptr(), Ordering::SeqCst);
        Ok(Self {
            inner: Mutex::new(Some(Arc::new(consumer))),
        })
    }

    fn subscribe(&self, topics: Vec<String>) -> PyResult<()> {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.get()?.subscribe(&refs).map_err(kafka_err)
    }

    /// Up to `max_messages` polled within `timeout_s` (the GIL released meanwhile), as
    /// `(topics, topic_index u16, partitions i32, offsets i64, times_ms i64, value_ends i64,
    /// values, value_null u8, key_ends i64, keys, errors)`, or None when nothing came.
    fn consume<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        timeout_s: f64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let consumer = self.get()?;
        let c = consumer.clone();
        let cols = py.allow_threads(move || {
            let deadline = Instant::now() + timeout_of(timeout_s);
            let mut cols = Columns::default();
            c.context().rebalanced.store(false, Ordering::SeqCst);
            while cols.len() + cols.errors.len() < max_messages {
                // Without waiting first: while messages flow, no clock read of ours per message.
                // A poll that runs a rebalance returns no message, and everything polled before
                // it is stale: dropped right after that poll, before anything newer is pushed.
                let purge = |cols: &mut Columns| {
                    if c.context().rebalanced.swap(false, Ordering::SeqCst) {
                        let errors = std::mem::take(&mut cols.errors);
                        *cols = Columns {
                            errors,
                            ..Columns::default()
                        };
                    }
                };
                let mut polled = c.poll(Duration::ZERO);
                purge(&mut cols);
                let mut left = Duration::ZERO;
                if polled.is_none() {
                    left = deadline.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        polled = c.poll(left);
                        purge(&mut cols);
                    }
                }
                match polled {
                    Some(Ok(m)) => cols.push(&m),
                    Some(Err(e)) => {
                        // A fatal error stays in the batch as well (the runner replaces the consumer).
                        if !c.context().reported.swap(false, Ordering::SeqCst) || is_fatal(&e) {
                            cols.errors
                                .push((error_code(&e), e.to_string(), is_fatal(&e)));
                        }
                    }
                    None => {
                        if left.is_zero() {
                            break;
                        }
                    }
                }
                if c.context().has_raised.load(Ordering::SeqCst) {
                    break;
                }
            }
            cols
        });
        Self::reraise(&consumer)?;
        if cols.len() == 0 && cols.errors.is_empty() {
            return Ok(None);
        }
        let out = (
            PyList::new(py, &cols.topics)?,
            le_bytes(py, &cols.topic_index),
            le_bytes(py, &cols.partitions),
            le_bytes(py, &cols.offsets),
            le_bytes(py, &cols.times_ms),
            le_bytes(py, &cols.value_ends),
            PyBytes::new(py, &cols.values),
            PyBytes::new(py, &cols.value_null),
            le_bytes(py, &cols.key_ends),
            PyBytes::new(py, &cols.keys),
            cols.errors,
        );
        Ok(Some(out.into_pyobject(py)?.into_any()))
    }

    fn assign(&self, parts: Vec<Part>) -> PyResult<()> {
        let consumer = self.get()?;
        consumer.context().acted.store(true, Ordering::SeqCst);
        consumer.assign(&tpl_of(&parts)?).map_err(kafka_err)
    }

    fn unassign(&self) -> PyResult<()> {
        let consumer = self.get()?;
        consumer.context().acted.store(true, Ordering::SeqCst);
        consumer.unassign().map_err(kafka_err)
    }

    fn assignment(&self) -> PyResult<Vec<Part>> {
        Ok(parts_of(&self.get()?.assignment().map_err(kafka_err)?))
    }

    /// The next offset to read of each partition (-1001 where none is known yet).
    fn position(&self, parts: Vec<Part>) -> PyResult<Vec<Part>> {
        let consumer = self.get()?;
        let tpl = tpl_of(&parts)?;
        let err = unsafe { rdsys::rd_kafka_position(consumer.client().native_ptr(), tpl.ptr()) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(resp_err(err));
        }
        Ok(parts_of(&tpl))
    }

    /// `(low, high)`: from librdkafka's last fetch when `cached`, else asked of the broker.
    fn watermarks(
        &self,
        py: Python<'_>,
        topic: String,
        partition: i32,
        timeout_s: f64,
        cached: bool,
    ) -> PyResult<(i64, i64)> {
        let consumer = self.get()?;
        if cached {
            let (mut low, mut high) = (-1i64, -1i64);
            let c_topic = std::ffi::CString::new(topic)
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
            let err = unsafe {
                rdsys::rd_kafka_get_watermark_offsets(
                    consumer.client().native_ptr(),
                    c_topic.as_ptr(),
                    partition,
                    &mut low,
                    &mut high,
                )
            };
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(resp_err(err));
            }
            return Ok((low, high));
        }
        py.allow_threads(|| consumer.fetch_watermarks(&topic, partition, timeout_of(timeout_s)))
            .map_err(kafka_err)
    }

    fn commit(&self, py: Python<'_>, parts: Vec<Part>, asynchronous: bool) -> PyResult<()> {
        let consumer = self.get()?;
        let tpl = tpl_of(&parts)?;
        let mode = if asynchronous {
            CommitMode::Async
        } else {
            CommitMode::Sync
        };
        py.allow_threads(|| consumer.commit(&tpl, mode))
            .map_err(kafka_err)
    }

    fn pause(&self, parts: Vec<Part>) -> PyResult<()> {
        self.get()?.pause(&tpl_of(&parts)?).map_err(kafka_err)
    }

    fn resume(&self, parts: Vec<Part>) -> PyResult<()> {
        self.get()?.resume(&tpl_of(&parts)?).map_err(kafka_err)
    }

    /// Leave the group (a final revoke runs the callback) and free the handle; idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(consumer) = self.inner.lock().unwrap().clone() else {
            return Ok(());
        };
        let c = consumer.clone();
        let closed = py.allow_threads(move || {
            if c.close_queue().is_ok() {
                let began = Instant::now();
                while !c.closed() && began.elapsed() < Duration::from_secs(60) {
                    c.poll(Duration::from_millis(100));
                }
            }
            c.closed()
        });
        self.inner.lock().unwrap().take();
        let raised = Self::reraise(&consumer);
        if closed {
            py.allow_threads(move || drop(consumer));
        } else {
            // rdkafka's drop would poll until closed, without a limit: leak the handle instead
            std::mem::forget(consumer);
        }
        raised
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeConsumer>()?;
    m.add("NativeKafkaError", m.py().get_type::<NativeKafkaError>())?;
    m.add("LIBRDKAFKA_VERSION", rdkafka::util::get_rdkafka_version().1)?;
    Ok(())
}
