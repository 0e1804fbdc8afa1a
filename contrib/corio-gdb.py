# corio-gdb.py - gdb commands for programs built on corio: the tasks of a
# loop, and the backtrace of a parked task.  corio-gdb(7).
#
# Load it with "source $prefix/share/corio/corio-gdb.py", or let gdb
# auto-load it for libcorio.so: make install puts a copy in gdb's auto-load
# directory, as $prefix/share/gdb/auto-load$libdir/libcorio.so.VERSION-gdb.py
# (corio-gdb(7) says what to add to gdbinit outside prefix=/usr).
#
#   corio tasks          every task of the selected thread's loop, as
#                        corio_dump(3) prints them
#   corio bt N [OPTS]    the backtrace of task N (OPTS go to gdb's bt:
#                        "full", "-frame-arguments all", a count, ...);
#                        "corio bt all" does every task
#   corio gcore [FILE]   gcore, then the task stacks that gcore could not
#                        read (guard pages) copied into FILE
#
# What it reads: the thread-local corio__loop (struct corio_loop *, NULL
# outside corio_run), whose "all" member heads a circular list of struct
# corio_task through prev/next; a task that is not running keeps its
# registers in t->ctx, where Boost.Context's jump_fcontext (x86_64 SysV)
# pushed them.  It needs libcorio's debug info (corio builds with -g).
#
# How "corio bt" works: a task that is not running has no registers in any
# thread, only the frame jump_fcontext saved on its stack.  While the command
# runs, an unwinder (gdb.unwinder) tells gdb that the caller of the selected
# thread's innermost frame is that saved frame; gdb's own unwinders do the
# rest.  The output of "bt" is then shown without the thread's own frames,
# renumbered from #0.  Nothing is written to the inferior, so it works alike
# on a live process and on a core file.  A frame filter ends every
# backtrace at the bottom of a task's stack (make_fcontext), where there is
# nothing left to unwind: "disable frame-filter global corio-task-bottom"
# turns it off.

import re
import struct
import time

import gdb
import gdb.unwinder

# The frame jump_fcontext saves, from the address it returns as the context
# (disassemble jump_fcontext in libboost_context.so.1.74.0):
#	lea -0x38(%rsp),%rsp; stmxcsr (%rsp); fnstcw 0x4(%rsp)
#	mov %r12,0x8(%rsp) ... mov %rbp,0x30(%rsp)
# and 0x38(%rsp) is the return address its call pushed; on resume it pops
# all of that, so the task's %rsp is then ctx + 0x40.
FCTX_SIZE = 0x40
FCTX_REGS = (("r12", 0x08), ("r13", 0x10), ("r14", 0x18), ("r15", 0x20),
             ("rbx", 0x28), ("rbp", 0x30), ("rip", 0x38))

# enum corio_task_state, for when the debug info does not name it.
STATES = {"CORIO_T_READY": 0, "CORIO_T_RUNNING": 1, "CORIO_T_PARKED": 2,
          "CORIO_T_DONE": 3}

# corio_dump's names of the opcodes (src/dump.c); others come from
# enum io_uring_op: IORING_OP_FUTEX_WAIT is "futex_wait".
OP_NAMES = {"IORING_OP_POLL_ADD": "poll", "IORING_OP_TIMEOUT": "sleep"}

CLOCK_MONOTONIC_COARSE = 6	# Linux's clockid: what park_ns is read on


def _error(msg):
    return gdb.GdbError("corio: " + msg)


def _type(name):
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        raise _error("no type %s in the debug info: corio-gdb needs "
                     "libcorio built with -g (it is, by default)" % name)


def _enum(name, fallback):
    """The values of an enum's members, by name."""
    try:
        return {f.name: int(f.enumval) for f in
                gdb.lookup_type(name).fields()}
    except gdb.error:
        return dict(fallback)


def _symbol(addr):
    """The name of the function at code address addr, or its address."""
    addr = int(addr)
    if not addr:
        return "NULL"
    try:
        block = gdb.block_for_pc(addr)
    except RuntimeError:
        block = None
    while block is not None and block.function is None:
        block = block.superblock
    if block is not None and block.start == addr:
        return block.function.print_name
    out = gdb.execute("info symbol %#x" % addr, to_string=True)
    m = re.match(r"(\S+) in section", out)
    return m.group(1) if m else "%#x" % addr


def _function_addr(name):
    """The address of function name, or None if the program lacks it."""
    try:
        return int(gdb.parse_and_eval("&" + name))
    except gdb.error:
        return None


def _target():
    """"native" (a process on this host), "core", or another target."""
    inf = gdb.selected_inferior()
    conn = getattr(inf, "connection", None)
    if conn is not None:
        kind = conn.type
    elif "core dump" in gdb.execute("info target", to_string=True):
        kind = "core"
    else:
        kind = "native"
    if kind != "core" and inf.pid <= 0:
        raise _error("the program is not running")
    return kind


def _loop():
    try:
        loop = gdb.parse_and_eval("corio__loop")
    except gdb.error as e:
        raise _error("cannot read corio__loop (%s): is the program built "
                     "on corio, with its debug info, and running or a "
                     "core?" % e)
    if int(loop) == 0:
        thread = gdb.selected_thread()
        raise _error("thread %s runs no corio loop (corio__loop is NULL): "
                     "select the thread inside corio_run (info threads, "
                     "thread N)" % (thread.num if thread else "?"))
    return loop


def _tasks(loop):
    """The tasks of loop, in its list's order (spawn order)."""
    head = loop["all"].address
    prev, t = head, loop["all"]["next"]
    seen = 0
    while int(t) != int(head):
        bad = None
        if int(t) == 0:
            bad = "a NULL link"
        else:
            try:
                if int(t["loop"]) != int(loop) or int(t["prev"]) != int(prev):
                    bad = "task %#x with broken links" % int(t)
            except gdb.MemoryError:
                bad = "task %#x outside the readable memory" % int(t)
        if bad:
            hint = ""
            if _target() == "core":
                hint = ("; a core made by gdb's gcore lacks the task stacks "
                        "when they have guard pages (MADV_GUARD_INSTALL): "
                        "make it with \"corio gcore\" or let the kernel dump "
                        "the core")
            raise _error("the loop's list of tasks has %s%s" % (bad, hint))
        yield t
        seen += 1
        if seen > 1 << 26:
            raise _error("the loop's list of tasks does not end")
        prev, t = t, t["next"]


def _task(loop, arg):
    try:
        tid = int(arg, 0)
    except ValueError:
        raise _error("\"%s\" is not a task id (the ID column of "
                     "\"corio tasks\")" % arg)
    for t in _tasks(loop):
        if int(t["id"]) == tid:
            return t
    raise _error("no task %d in this loop (\"corio tasks\" lists them)" % tid)


def _state_name(t, states):
    s = int(t["state"])
    if s == states["CORIO_T_READY"]:
        return "ready" if bool(t["started"]) else "new"
    if s == states["CORIO_T_RUNNING"]:
        return "running"
    if s == states["CORIO_T_PARKED"]:
        return "parked"
    return "done"


class _Hooks:
    """What a parked task waits on, from its park hook (src/dump.c)."""

    def __init__(self):
        self.addr = {name: _function_addr(name) for name in
                     ("corio__op_cancel", "corio__task_join_cancel",
                      "corio__sync_cancel", "corio__group_wait_cancel")}
        self.ops = {v: k for k, v in
                    _enum("enum io_uring_op", {}).items()}
        self.waiter = None

    def op_name(self, opcode):
        name = self.ops.get(opcode)
        if name is None:
            return "op %d" % opcode
        return OP_NAMES.get(name, name[len("IORING_OP_"):].lower())

    def waits_on(self, t):
        hook = int(t["park_hook"])
        data = t["park_data"]
        if hook == 0:
            return "uncancellable wait"
        if hook == self.addr["corio__op_cancel"]:
            if self.waiter is None:
                self.waiter = _type("struct corio_waiter").pointer()
            w = data.cast(self.waiter).dereference()
            what = self.op_name(int(w["opcode"]))
            fd = int(w["fd"])
            return "%s fd %d" % (what, fd) if fd >= 0 else what
        if hook == self.addr["corio__task_join_cancel"]:
            joined = data.cast(t.type)
            return "join task %d" % int(joined["id"])
        if hook == self.addr["corio__sync_cancel"]:
            return "sync wait"
        if hook == self.addr["corio__group_wait_cancel"]:
            return "group wait"
        return "wait (%s)" % _symbol(hook)


class _TaskUnwinder(gdb.unwinder.Unwinder):
    """Makes a task's saved frame the caller of the thread's frame."""

    class _Id:
        def __init__(self, sp, pc):
            self.sp = sp
            self.pc = pc

    def __init__(self):
        super().__init__("corio-task")
        self.armed = None
        self.used = False

    def __call__(self, pending):
        armed = self.armed
        if armed is None or pending.level() != armed[0]:
            return None
        pc = pending.read_register("pc")
        # The frame's id uses the task's context as its stack address: one
        # below every frame of the task, so gdb does not take the step from
        # this stack to the task's as a stack unwinding backwards.
        info = pending.create_unwind_info(self._Id(armed[1], pc))
        for name, value in armed[2]:
            info.add_saved_register(name, value)
        self.used = True
        return info


class _FcontextBottom:
    """Ends a backtrace at make_fcontext: a task stack's first frame."""

    def __init__(self):
        self.name = "corio-task-bottom"
        self.priority = 100
        self.enabled = True

    def filter(self, frames):
        for decorator in frames:
            frame = decorator.inferior_frame()
            if frame.name() == "make_fcontext":
                return
            yield decorator


_unwinder = _TaskUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
gdb.frame_filters["corio-task-bottom"] = _FcontextBottom()


def _saved_registers(t):
    """(ctx, [(register, gdb.Value)]) of a task that is not running."""
    arch = gdb.selected_inferior().architecture().name()
    if arch != "i386:x86-64":
        raise _error("corio bt knows Boost.Context's frame on x86_64 "
                     "only, not on %s" % arch)
    ctx = int(t["ctx"])
    try:
        raw = bytes(gdb.selected_inferior().read_memory(ctx, FCTX_SIZE))
    except gdb.MemoryError:
        raise _error("task %d's saved context at %#x is not readable"
                     % (int(t["id"]), ctx))
    u64 = _type("unsigned long")
    regs = [(name, gdb.Value(struct.unpack_from("<Q", raw, off)[0]).cast(u64))
            for name, off in FCTX_REGS]
    regs.append(("rsp", gdb.Value(ctx + FCTX_SIZE).cast(u64)))
    return ctx, regs


_FRAME_LINE = re.compile(r"#(\d+)\s+")


def _task_backtrace(t, opts):
    """gdb's bt of a task that is not running, as a string."""
    ctx, regs = _saved_registers(t)
    try:
        frame = gdb.newest_frame()
    except gdb.error:
        raise _error("the selected thread has no frames")
    try:
        selected = gdb.selected_frame().level()
    except gdb.error:
        selected = 0
    # Inline frames share their function's registers: the unwinder goes on
    # the first real frame, and every frame up to it is the thread's.
    level = 0
    while frame.type() == gdb.INLINE_FRAME and frame.older() is not None:
        frame = frame.older()
        level += 1
    # A count of frames counts the thread's frames too.
    words = opts.split()
    for i, word in enumerate(words):
        if word.isdigit():
            words[i] = str(int(word) + level + 1)
            break
    _unwinder.armed = (level, gdb.Value(ctx).cast(regs[0][1].type), regs)
    _unwinder.used = False
    gdb.invalidate_cached_frames()
    try:
        out = gdb.execute("backtrace " + " ".join(words), to_string=True)
    finally:
        _unwinder.armed = None
        gdb.invalidate_cached_frames()
        try:
            gdb.execute("select-frame level %d" % selected, to_string=True)
        except gdb.error:
            pass
    if not _unwinder.used:
        raise _error("gdb did not take task %d's saved frame (is another "
                     "unwinder in the way? \"info unwinder\")"
                     % int(t["id"]))
    skip = level + 1
    lines, keep = [], False
    for line in out.splitlines():
        m = _FRAME_LINE.match(line)
        if m:
            n = int(m.group(1))
            keep = n >= skip
            if keep:
                line = "#%-2d %s" % (n - skip, line[m.end():])
        if keep or not (m or line.startswith(" ")):
            lines.append(line)
    return "\n".join(lines) + "\n"


class _Corio(gdb.Command):
    """Commands for corio's tasks: corio tasks, corio bt N, corio gcore.

See corio-gdb(7)."""

    def __init__(self):
        super().__init__("corio", gdb.COMMAND_STACK, gdb.COMPLETE_COMMAND,
                         prefix=True)


class _CorioTasks(gdb.Command):
    """List the tasks of the selected thread's corio loop.

Usage: corio tasks

One line per task, as corio_dump(3) prints them: its id, its state (new,
ready, running, parked, done), how long it has been parked, what it waits
on (an io_uring op and its fd, a join, a sync wait, a group wait) and its
function, with the flags cancelled, shielded, detached and main.  On a core
file the wait is counted to the loop's last turn."""

    def __init__(self):
        super().__init__("corio tasks", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        if arg.strip():
            raise _error("corio tasks takes no argument")
        loop = _loop()
        states = _enum("enum corio_task_state", STATES)
        hooks = _Hooks()
        if _target() == "native":
            # The process's clock is this host's.
            now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        else:
            now = int(loop["now_ns"])
            gdb.write("(a core file or a remote process: WAITED counts to "
                      "the loop's last turn)\n")
        main = int(loop["main"])
        rows = ["%-6s %-8s %-10s %-28s %s" % ("ID", "STATE", "WAITED",
                                              "WAITS ON", "TASK")]
        for t in _tasks(loop):
            state = _state_name(t, states)
            waited, what = "-", "-"
            if state == "parked":
                what = hooks.waits_on(t)
                waited = "%.1fms" % ((now - int(t["park_ns"])) / 1e6)
            flags = "".join(" " + name for name, on in (
                ("cancelled", bool(t["cancelled"])),
                ("shielded", bool(t["shield"])),
                ("detached", bool(t["detached"])),
                ("main", int(t) == main)) if on)
            rows.append("%-6d %-8s %-10s %-28s (%s)%s" % (
                int(t["id"]), state, waited, what, _symbol(t["fn"]), flags))
        gdb.write("\n".join(rows) + "\n")


class _CorioBt(gdb.Command):
    """Print the backtrace of a corio task.

Usage: corio bt N [BT-OPTIONS]
       corio bt all [BT-OPTIONS]

N is a task id, as "corio tasks" shows it.  A parked or ready task's
backtrace starts where it switched out (corio__task_park, inside the await
it is parked in) and ends at its function; it works on a live process and on
a core file.  The running task's backtrace is the thread's own.  BT-OPTIONS
go to gdb's backtrace: "full" adds the locals."""

    def __init__(self):
        super().__init__("corio bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        words = arg.split(None, 1)
        if not words:
            raise _error("usage: corio bt N [BT-OPTIONS] (N from "
                         "\"corio tasks\", or all)")
        opts = words[1] if len(words) > 1 else ""
        loop = _loop()
        if words[0] == "all":
            tasks = list(_tasks(loop))
        else:
            tasks = [_task(loop, words[0])]
        states = _enum("enum corio_task_state", STATES)
        for t in tasks:
            if len(tasks) > 1:
                gdb.write("\ntask %d (%s), %s:\n" % (
                    int(t["id"]), _symbol(t["fn"]), _state_name(t, states)))
            self.one(loop, t, opts, states)

    @staticmethod
    def one(loop, t, opts, states):
        state = _state_name(t, states)
        tid = int(t["id"])
        if state == "running" or int(t) == int(loop["current"]):
            gdb.write("task %d is running: its stack is the thread's\n" % tid)
            gdb.execute("backtrace " + opts)
        elif state == "new":
            gdb.write("task %d has not run yet: it has no frames\n" % tid)
        elif state == "done":
            gdb.write("task %d has returned %d: it has no frames\n"
                      % (tid, int(t["result"])))
        else:
            gdb.write(_task_backtrace(t, opts))


class _CorioGcore(gdb.Command):
    """Write a core file of the process, task stacks included.

Usage: corio gcore [FILE]

Runs gdb's gcore (FILE defaults to core.PID), then copies the task stacks
into FILE again.  gcore gives up on a whole mapping at the first page it
cannot read, and corio's stacks share one mapping per slab with a guard
page (MADV_GUARD_INSTALL) below each: plain gcore leaves every task stack
out of the core."""

    CHUNK = 1 << 16
    PAGE = 1 << 12

    def __init__(self):
        super().__init__("corio gcore", gdb.COMMAND_FILES,
                         gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        if _target() == "core":
            raise _error("corio gcore needs a live process, not a core")
        inf = gdb.selected_inferior()
        path = arg.strip() or "core.%d" % inf.pid
        stacks = []
        for thread in inf.threads():
            with _SelectedThread(thread):
                try:
                    loop = gdb.parse_and_eval("corio__loop")
                except gdb.error:
                    continue
                if int(loop) == 0:
                    continue
                for t in _tasks(loop):
                    base = int(t["stack"]["base"])
                    stacks.append((base, base + int(t["stack"]["size"])))
        gdb.execute("gcore " + path)
        copied = self.patch(inf, path, stacks)
        gdb.write("corio gcore: copied the %d bytes of the mappings that "
                  "hold %d task stacks into %s\n"
                  % (copied, len(stacks), path))

    def patch(self, inf, path, stacks):
        copied = 0
        with open(path, "r+b") as f:
            hdr = f.read(64)
            if hdr[:4] != b"\x7fELF" or hdr[4] != 2 or hdr[5] != 1:
                raise _error("%s is not a little-endian ELF64 core" % path)
            phoff, = struct.unpack_from("<Q", hdr, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            for i in range(phnum):
                (p_type, _, p_offset, p_vaddr, _, p_filesz, _,
                 _) = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
                if p_type != 1 or not p_filesz:	# PT_LOAD with contents
                    continue
                end = p_vaddr + p_filesz
                if not any(lo < end and hi > p_vaddr for lo, hi in stacks):
                    continue
                copied += self.copy(inf, f, p_offset, p_vaddr, end)
        return copied

    def copy(self, inf, f, offset, start, end):
        """Copies [start, end) into f at offset, but unreadable pages."""
        copied = 0
        addr = start
        while addr < end:
            n = min(self.CHUNK, end - addr)
            pieces = [(addr, n)]
            try:
                data = [bytes(inf.read_memory(addr, n))]
            except gdb.MemoryError:
                pieces, data = [], []
                for a in range(addr, addr + n, self.PAGE):
                    m = min(self.PAGE, addr + n - a)
                    try:
                        data.append(bytes(inf.read_memory(a, m)))
                        pieces.append((a, m))
                    except gdb.MemoryError:
                        pass
            for (a, m), d in zip(pieces, data):
                f.seek(offset + a - start)
                f.write(d)
                copied += m
            addr += n
        return copied


class _SelectedThread:
    """Selects a thread for a while."""

    def __init__(self, thread):
        self.thread = thread
        self.old = None

    def __enter__(self):
        self.old = gdb.selected_thread()
        self.thread.switch()

    def __exit__(self, *exc):
        if self.old is not None and self.old.is_valid():
            self.old.switch()


_Corio()
_CorioTasks()
_CorioBt()
_CorioGcore()
