import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Persistent worker threads that run a parallel loop with no heap allocation per call.
///
/// `DispatchQueue.concurrentPerform` allocates inside libdispatch on every call (about four
/// allocations per call measured here, two even through `dispatch_apply_f`), and its threads
/// cannot be bound to a NUMA node once. This pool starts `threadCount - 1` threads once; a call
/// publishes the loop body under a mutex, the caller runs index 0 itself, and workers that
/// finished spin briefly before they sleep on a condition variable, so back-to-back calls (a
/// decode loop, a benchmark) wake them without a syscall; after the spin window they sleep and
/// use no CPU.
final class WorkerPool: @unchecked Sendable {
    /// Threads that run a loop, the caller included.
    let threadCount: Int
    private let state: State
    private var threads: [pthread_t] = []

    /// State shared with the worker threads (they retain it; the pool does not retain them).
    final class State: @unchecked Sendable {
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        /// The job of the current call; guarded by `mutex`. An object rather than a closure:
        /// handing a non-escaping closure to other threads (`withoutActuallyEscaping`) allocates a
        /// context on every call.
        var job: (any ParallelJob)?
        var participants = 0
        var shutdown = false
        /// The call number, published with release ordering after `job` is set.
        let generation = Atomic<UInt64>(0)
        /// Workers (not the caller) that finished the current call.
        let finished = Atomic<Int>(0)
        /// Runs once on each worker thread before its first job (e.g. NUMA binding); index ≥ 1.
        let onStart: (@Sendable (Int) -> Void)?
        /// How long an idle worker spins for the next call before it sleeps.
        let spinNanoseconds: UInt64

        init(onStart: (@Sendable (Int) -> Void)?, spinNanoseconds: UInt64) {
            self.onStart = onStart
            self.spinNanoseconds = spinNanoseconds
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(wake, nil)
        }

        deinit {
            pthread_cond_destroy(wake)
            pthread_mutex_destroy(mutex)
            wake.deallocate()
            mutex.deallocate()
        }
    }

    /// - Parameters:
    ///   - threadCount: threads per loop, the caller included (`threadCount - 1` are started).
    ///   - spinMicroseconds: how long an idle worker spins for the next call before it sleeps.
    ///   - onStart: run on each started thread with its index (1…threadCount-1) before any work.
    init(threadCount: Int, spinMicroseconds: Int = 50, onStart: (@Sendable (Int) -> Void)? = nil) {
        precondition(threadCount > 0, "threadCount must be positive")
        self.threadCount = threadCount
        self.state = State(onStart: onStart, spinNanoseconds: UInt64(max(0, spinMicroseconds)) * 1000)
        for index in 1..<max(1, threadCount) {
            let context = Unmanaged.passRetained(WorkerContext(state: state, index: index)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                WorkerPool.workerLoop(context.state, index: context.index)
                return nil
            }, context)
            precondition(status == 0, "pthread_create failed with \(status)")
            threads.append(thread)
        }
    }

    deinit {
        pthread_mutex_lock(state.mutex)
        state.shutdown = true
        state.generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(state.wake)
        pthread_mutex_unlock(state.mutex)
        for thread in threads { pthread_join(thread, nil) }
    }

    private final class WorkerContext {
        let state: State
        let index: Int
        init(state: State, index: Int) {
            self.state = state
            self.index = index
        }
    }

    /// Runs `job.execute(i)` for every `i` in `0..<participants`, each on its own thread (index 0
    /// on the caller), and returns when all are done. `participants` must not exceed
    /// ``threadCount``. Calls must not overlap (the sampler guarantees it).
    func run(participants: Int, _ job: any ParallelJob) {
        precondition(participants >= 1 && participants <= threadCount, "participants \(participants) outside 1...\(threadCount)")
        if participants == 1 {
            job.execute(0)
            return
        }
        state.finished.store(0, ordering: .relaxed)
        pthread_mutex_lock(state.mutex)
        state.job = job
        state.participants = participants
        state.generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(state.wake)
        pthread_mutex_unlock(state.mutex)
        job.execute(0)
        var spins = 0
        while state.finished.load(ordering: .acquiring) < participants - 1 {
            spins += 1
            if spins > 1000 { sched_yield() }
        }
        pthread_mutex_lock(state.mutex)
        state.job = nil
        pthread_mutex_unlock(state.mutex)
    }

    private static func workerLoop(_ state: State, index: Int) {
        state.onStart?(index)
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
            pthread_mutex_lock(state.mutex)
            while state.generation.load(ordering: .acquiring) == seen && !state.shutdown {
                pthread_cond_wait(state.wake, state.mutex)
            }
            if state.shutdown {
                pthread_mutex_unlock(state.mutex)
                return
            }
            seen = state.generation.load(ordering: .acquiring)
            let participates = index < state.participants
            pthread_mutex_unlock(state.mutex)
            if participates {
                runJob(state, index: index)
                state.finished.add(1, ordering: .releasing)
            }
        }
    }

    private static func runJob(_ state: State, index: Int) {
        pthread_mutex_lock(state.mutex)
        let job = state.job
        pthread_mutex_unlock(state.mutex)
        job?.execute(index)
    }
}

/// Work a ``WorkerPool`` call runs: `execute(i)` once for each participant `i`.
protocol ParallelJob: AnyObject, Sendable {
    func execute(_ index: Int)
}

/// CLOCK_MONOTONIC in nanoseconds.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

/// A reusable spinning barrier for the participants of one ``WorkerPool`` call, all of which run
/// at once on their own threads.
final class SpinBarrier: @unchecked Sendable {
    private let arrived = Atomic<Int>(0)
    private let phase = Atomic<Int>(0)

    /// Blocks until `participants` threads have called `wait` for this phase.
    func wait(participants: Int) {
        if participants <= 1 { return }
        let current = phase.load(ordering: .acquiring)
        if arrived.add(1, ordering: .acquiringAndReleasing).newValue == participants {
            arrived.store(0, ordering: .relaxed)
            phase.add(1, ordering: .releasing)
            return
        }
        var spins = 0
        while phase.load(ordering: .acquiring) == current {
            spins += 1
            if spins > 1000 { sched_yield() }
        }
    }
}
