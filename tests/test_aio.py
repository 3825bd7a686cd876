"""gadgetd.aio's queue on real Linux AIO (reads of /dev/zero complete at once): what completions
give back goes to the kernel again in one io_submit per round."""

import mmap
import select

import libaio

from gadgetd.aio import AioQueue


def test_blocks_given_back_by_completions_are_submitted_together():
    queue = AioQueue(8)
    calls = []
    submit = queue.ctx.submit
    queue.ctx.submit = lambda blocks: calls.append(len(blocks)) or submit(blocks)
    done, idle = [], []

    def completed(block, res, _res2):
        done.append(res)
        if len(done) <= 60:
            queue.resubmit(block, idle, block)

    with open("/dev/zero", "rb") as zero:
        blocks = [queue.block(libaio.AIOBLOCK_MODE_READ, zero, completed) for _ in range(4)]
        for block in blocks:
            block.buffer_list = (mmap.mmap(-1, 4096),)
            assert queue.submit(block)
        poller = select.epoll()
        poller.register(queue.fileno(), select.EPOLLIN)
        while queue.in_flight:
            assert poller.poll(5), "no completion within 5 s"
            queue.process()
        queue.close()
    assert done == [4096] * 64 and idle == []
    assert calls[:4] == [1, 1, 1, 1]  # the first submissions, one each
    assert sum(calls[4:]) == 60 and len(calls) - 4 < 60  # given back in rounds, not one by one
    assert max(calls[4:]) > 1
