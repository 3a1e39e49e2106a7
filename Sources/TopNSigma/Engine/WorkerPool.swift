import CShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads that help with a call's work, with no heap allocation per call and
/// no thread ever waiting for another one to start.
///
/// `DispatchQueue.concurrentPerform` allocates inside libdispatch on every call (about four
/// allocations per call measured here, two even through `dispatch_apply_f`), and its threads
/// cannot be bound to a NUMA node once. This pool starts up to `threadCount - 1` threads once.
/// ``dispatch(_:participants:wakeSleepers:)`` publishes a job and returns at once: the job
/// itself hands out its tasks (the sampler claims them from atomic counters), the caller works
/// on them too, and the caller waits only for tasks that a worker has claimed. A worker that
/// wakes late finds nothing left to claim and goes back to waiting, so a descheduled or slow
/// worker never stalls a call.
///
/// Workers that finished spin briefly for the next call before they sleep on a condition
/// variable, so back-to-back calls (a decode loop, a benchmark) reach them without a syscall.
/// All shared state is changed inside ``State/withLock(_:)``; the pthread calls live in this
/// file.
final class WorkerPool: @unchecked Sendable {
    /// Threads that can work on a call, the caller included: `1 +` the threads actually started.
    let threadCount: Int
    /// Threads asked for, the caller included. Larger than ``threadCount`` when the system
    /// refused to start a thread (`pthread_create` failed: a process or memory limit).
    let requestedThreadCount: Int
    private let state: State
    private var threads: [pthread_t] = []

    /// State shared with the worker threads (they retain it; the pool does not retain them).
    final class State: @unchecked Sendable {
        private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        /// The job of the latest call, unretained (`Unmanaged.toOpaque()`); guarded by `mutex`.
        /// The job (the sampler) owns the pool and shuts it down before it goes away, so a
        /// worker needs no reference of its own, and must hold none: a worker holding the last
        /// one would run the sampler's deinit itself, which cannot join its own thread (the
        /// thread then exits unjoined: ThreadSanitizer reported it as a leak in CI).
        var job: UnsafeMutableRawPointer?
        /// Runs a job on a worker: `run(job, worker)`, without retaining the job.
        let run: @Sendable (UnsafeMutableRawPointer, Int) -> Void
        /// Workers (by index) that take part in the latest call; guarded by `mutex`.
        var participants = 0
        var shutdown = false
        /// Workers asleep (or about to be) for want of work.
        let sleeping = Atomic<Int>(0)
        #if os(Linux)
        /// The futex word idle workers wait on; bumped by every wake-up.
        private let sleepWord = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        #endif
        /// The call number, bumped with release ordering after `job` is set.
        let generation = Atomic<UInt64>(0)
        /// Runs once on each worker thread before its first job (e.g. NUMA binding); index ≥ 1.
        let onStart: (@Sendable (Int) -> Void)?
        /// Workers that have run `onStart`.
        let started = Atomic<Int>(0)
        /// How long an idle worker spins for the next call before it sleeps.
        let spinNanoseconds: UInt64

        init(
            onStart: (@Sendable (Int) -> Void)?, spinNanoseconds: UInt64,
            run: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void
        ) {
            self.onStart = onStart
            self.run = run
            self.spinNanoseconds = spinNanoseconds
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(wake, nil)
            #if os(Linux)
            sleepWord.initialize(to: 0)
            #endif
        }

        deinit {
            pthread_cond_destroy(wake)
            pthread_mutex_destroy(mutex)
            wake.deallocate()
            mutex.deallocate()
            #if os(Linux)
            sleepWord.deallocate()
            #endif
        }

        /// Runs `body` with the mutex held.
        @inline(__always)
        func withLock<R>(_ body: () -> R) -> R {
            pthread_mutex_lock(mutex)
            defer { pthread_mutex_unlock(mutex) }
            return body()
        }

        /// Sleeps until a wake-up (``wakeAll()``) after `generation` has moved past `seen`
        /// (shutting down moves it too); may return early, spuriously. Call without the mutex.
        ///
        /// Linux: a futex wait, so that the woken worker need not retake a mutex (a condition
        /// variable's woken waiter must, and if the caller still holds it the waiter blocks
        /// again and needs a second wake-up; glibc's broadcast also waited for the woken waiter,
        /// about 60 µs on this project's 2-vCPU VMs, against 9 µs for a futex wake). No wake-up
        /// is lost: the worker reads the word, counts itself in ``sleeping`` and rechecks
        /// `generation`; the caller moves `generation`, then reads ``sleeping`` and bumps the
        /// word (all sequentially consistent), so either the worker sees the new generation or
        /// the caller sees the sleeper and the wait returns.
        func sleepWhileIdle(seen: UInt64) {
            #if os(Linux)
            let word = topnsigma_word_load(sleepWord)
            sleeping.add(1, ordering: .sequentiallyConsistent)
            if generation.load(ordering: .sequentiallyConsistent) == seen {
                topnsigma_futex_wait(sleepWord, word)
            }
            sleeping.subtract(1, ordering: .sequentiallyConsistent)
            #else
            withLock {
                sleeping.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(wake, mutex) }
                sleeping.subtract(1, ordering: .sequentiallyConsistent)
            }
            #endif
        }

        /// Wakes every sleeping worker; call after moving `generation`, without the mutex.
        func wakeAll() {
            #if os(Linux)
            topnsigma_word_bump(sleepWord)
            topnsigma_futex_wake_all(sleepWord)
            #else
            withLock { pthread_cond_broadcast(wake) }
            #endif
        }
    }

    /// - Parameters:
    ///   - threadCount: threads per call, the caller included (`threadCount - 1` are started).
    ///   - spinMicroseconds: how long an idle worker spins for the next call before it sleeps.
    ///   - onStart: run on each started thread with its index (1…threadCount-1) before any work.
    ///   - systemThreadLimit: for tests, a system that refuses every thread after this many
    ///     (`pthread_create` answers `EAGAIN`, as under a process or memory limit).
    ///   - run: runs a dispatched job on a worker, `run(job, worker)`, without retaining it
    ///     (``PoolJob/runUnretained``).
    ///
    /// A thread that cannot be started (a process limit) is not retried: the pool runs with the
    /// threads it has, and ``threadCount`` says how many.
    init(
        threadCount: Int, spinMicroseconds: Int = 50, onStart: (@Sendable (Int) -> Void)? = nil,
        systemThreadLimit: Int = .max, run: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void
    ) {
        self.requestedThreadCount = max(1, threadCount)
        self.state = State(onStart: onStart, spinNanoseconds: UInt64(max(0, spinMicroseconds)) * 1000, run: run)
        var started: [pthread_t] = []
        for index in 1..<max(1, threadCount) {
            let context = Unmanaged.passRetained(WorkerContext(state: state, index: index)).toOpaque()
            var thread = pthread_t()
            let status =
                started.count >= systemThreadLimit
                ? EAGAIN
                : pthread_create(
                    &thread, nil,
                    { raw in
                        let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                        WorkerPool.nameCurrentThread("topnsigma-\(context.index)")
                        WorkerPool.workerLoop(context.state, index: context.index)
                        return nil
                    }, context)
            if status != 0 {
                Unmanaged<WorkerContext>.fromOpaque(context).release()
                break
            }
            started.append(thread)
        }
        self.threads = started
        self.threadCount = started.count + 1
        // Wait once, here, for every worker to have run `onStart` (its NUMA binding), so that
        // what the pool reports is settled when `init` returns. Calls never wait for a start.
        while state.started.load(ordering: .acquiring) < started.count { sched_yield() }
    }

    deinit { shutdown() }

    /// Stops and joins every worker. After it returns no worker touches any job again; the
    /// owner of the job calls it before the job's memory goes away. Idempotent.
    func shutdown() {
        state.withLock {
            state.shutdown = true
            state.job = nil
            state.generation.add(1, ordering: .sequentiallyConsistent)
        }
        state.wakeAll()
        for thread in threads { pthread_join(thread, nil) }
        threads = []
    }

    private final class WorkerContext {
        let state: State
        let index: Int
        init(state: State, index: Int) {
            self.state = state
            self.index = index
        }
    }

    /// How many workers would take part in a call dispatched now: those spinning for work, and
    /// the sleeping ones too when `wakeSleepers`. A hint: a worker may fall asleep meanwhile.
    func helpersAvailable(wakeSleepers: Bool) -> Int {
        guard threadCount > 1 else { return 0 }
        return wakeSleepers
            ? threadCount - 1 : max(0, threadCount - 1 - state.sleeping.load(ordering: .sequentiallyConsistent))
    }

    /// Publishes `job` to workers `1..<participants` and returns at once; the caller then works
    /// on the job itself as participant 0. Spinning workers see it within nanoseconds. Sleeping
    /// ones are woken only when `wakeSleepers` (a wake-up costs the caller a syscall and takes
    /// the worker tens of microseconds on a virtual machine: not worth it for a small job).
    func dispatch(_ job: Unmanaged<some PoolJob>, participants: Int, wakeSleepers: Bool) {
        guard participants > 1, threadCount > 1 else { return }
        state.withLock {
            state.job = job.toOpaque()
            state.participants = min(participants, threadCount)
            state.generation.add(1, ordering: .sequentiallyConsistent)
        }
        // After the unlock, so that a woken worker never blocks on the mutex (see
        // ``State/sleepWhileIdle(seen:)``).
        if wakeSleepers && state.sleeping.load(ordering: .sequentiallyConsistent) > 0 { state.wakeAll() }
    }

    private static func workerLoop(_ state: State, index: Int) {
        state.onStart?(index)
        state.started.add(1, ordering: .releasing)
        var seen: UInt64 = 0
        while true {
            // Spin for the next call for `spinNanoseconds` before sleeping: waking a sleeping
            // thread costs tens of microseconds on a virtual machine.
            let deadline = monotonicNanoseconds() &+ state.spinNanoseconds
            var spins = 0
            while state.generation.load(ordering: .acquiring) == seen {
                spins &+= 1
                if spins & 255 == 0 && monotonicNanoseconds() > deadline { break }
            }
            if state.generation.load(ordering: .acquiring) == seen {
                state.sleepWhileIdle(seen: seen)
                // Spurious, or a call too small to wake sleepers: spin and sleep again.
                if state.generation.load(ordering: .acquiring) == seen { continue }
            }
            let (job, participates, stop) = state.withLock {
                seen = state.generation.load(ordering: .acquiring)
                return (state.job, index < state.participants, state.shutdown)
            }
            if stop { return }
            if participates, let job { state.run(job, index) }
        }
    }

    /// Names the calling thread (shown by `top -H`, debuggers and `/proc/…/task/…/comm`).
    static func nameCurrentThread(_ name: String) {
        _ = String(name.prefix(15)).withCString { topnsigma_name_current_thread($0) }
    }
}

/// Work that a ``WorkerPool`` hands to its workers: each participant calls `work(worker:)`,
/// which claims tasks until none are left. A call may arrive late, after the job's call is
/// over; it must then find nothing to claim and return without touching the call's buffers.
protocol PoolJob: AnyObject, Sendable {
    func work(worker: Int)
}

extension PoolJob {
    /// A pool's `run` for jobs of this type: `work(worker:)` on the job at `raw`
    /// (`Unmanaged.toOpaque()`), neither retained nor released. Made once, with the pool;
    /// calling it allocates nothing.
    static var runUnretained: @Sendable (UnsafeMutableRawPointer, Int) -> Void {
        { raw, worker in Unmanaged<Self>.fromOpaque(raw)._withUnsafeGuaranteedRef { $0.work(worker: worker) } }
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}
