"""The training images of a folder data set decoded and augmented on the GPU with NVIDIA DALI (optional).

``--data_pipeline dali`` (or ``auto`` on CUDA with DALI installed): the sample order, the sharding per process and
the resume position are :class:`dataset.folder.FolderImageSet`'s, so the batches hold the same images; the encoded
files are read by a thread pool one batch ahead and handed to DALI, which decodes them on the GPU (nvJPEG) with a
RandomResizedCrop-equivalent box (area 0.08-1, ratio 3/4-4/3, ten tries), resizes bilinearly to the crop, flips half
of them and returns uint8 CHW crops on the device; the float conversion and normalisation are then the split's.
DALI draws the crops from its own generator (seeded once per run): the crops differ from the DataLoader pipeline's and
a run resumed within an epoch continues with the same images but other crops. Evaluation and MLKD's strong view stay
on the DataLoader pipeline. Not executed in this project's test environment (no GPU, no DALI): the tests skip it.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch

# DALI's seed is a 32-bit integer
_SEED_RANGE = 2 ** 31 - 1


class DaliTrainReader:
    def __init__(self, samples, transform, device: torch.device, settings):
        self.samples = samples
        self.crop = int(transform.crop)
        self.device = torch.device(device)
        self.threads = max(1, int(settings.num_workers))
        self.pipe = None
        self.max_batch = 0
        self.pool = ThreadPoolExecutor(self.threads)  # reads the files of one batch
        self.ahead = ThreadPoolExecutor(1)  # prepares the next batch while DALI decodes this one

    def _build(self, max_batch: int, seed: int) -> None:
        from nvidia.dali import fn, pipeline_def, types

        crop = self.crop
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()

        @pipeline_def(batch_size=max_batch, num_threads=self.threads, device_id=index, seed=seed % _SEED_RANGE,
                      exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)
        def train_pipeline():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8)
            images = fn.decoders.image_random_crop(jpegs, device="mixed", output_type=types.RGB,
                                                   random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                                   num_attempts=10)
            images = fn.resize(images, resize_x=crop, resize_y=crop, interp_type=types.INTERP_LINEAR, antialias=True)
            images = fn.flip(images, horizontal=fn.random.coin_flip(probability=0.5))
            return fn.transpose(images, perm=[2, 0, 1])

        self.pipe = train_pipeline()
        self.pipe.build()
        self.max_batch = max_batch

    def _encoded(self, batch_keys: List[Tuple[int, int, int]]):
        return list(self.pool.map(lambda key: np.frombuffer(self.samples.read(key[0]), dtype=np.uint8), batch_keys))

    def batches(self, keys: Sequence[List[Tuple[int, int, int]]]) -> Iterator[tuple]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        if not len(keys):
            return
        first = keys[0]  # a full global batch's shard: no later batch of the epoch is larger
        if self.pipe is None or len(first) > self.max_batch:
            self._build(len(first), first[0][1])
        pending = self.ahead.submit(self._encoded, keys[0])
        for i, batch_keys in enumerate(keys):
            encoded = pending.result()
            if i + 1 < len(keys):
                pending = self.ahead.submit(self._encoded, keys[i + 1])
            self.pipe.feed_input("jpegs", encoded)
            (images,) = self.pipe.run()
            x = torch.empty((len(batch_keys), 3, self.crop, self.crop), dtype=torch.uint8, device=self.device)
            feed_ndarray(images.as_tensor(), x, cuda_stream=torch.cuda.current_stream(self.device))
            index = torch.tensor([k[0] for k in batch_keys], dtype=torch.int64)
            y = torch.from_numpy(self.samples.targets[index.numpy()])
            yield x, y.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)
