"""The lives of Glance images (upload, import task, download, sharing, update, delete), rendered
as the notifications Glance sends for them."""
from __future__ import annotations

from datetime import timedelta

from . import payloads
from .core import FleetCore
from .model import (
    END,
    ERROR,
    P_PARTIAL_DOWNLOAD,
    P_TASK_FAIL,
    P_UPLOAD_FAIL,
    START,
    STEP,
    UPLOAD_ERRORS,
    UPLOAD_S,
    Gen,
    Image,
    Task,
)


class GlanceLives(FleetCore):
    """What an image does in its life, as Glance notifies it."""

    # --- image lives ---------------------------------------------------------------------------

    def _touch(self, image: Image, status: str | None = None) -> None:
        if status:
            image.status = status
        image.updated_at = self.now

    def _upload(self, image: Image) -> Gen:
        """image.prepare -> (data) -> image.upload (INFO, then activate) or image.upload ERROR (a string)."""
        op = self._open("image.upload", image.id, None)
        self._touch(image, "saving")
        self._glance("image.prepare", "INFO", payloads.image_payload(image, importing=True), op, START)
        yield self.rng.uniform(*UPLOAD_S) * image.size / (8 * 1024**3)
        if self.rng.random() < P_UPLOAD_FAIL:
            self._touch(image, "queued")
            text = self.rng.choice(UPLOAD_ERRORS).format(id=image.id)
            op.end_anonymous = image.id not in text
            self.counts["anonymous"] += op.end_anonymous
            self._glance("image.upload", "ERROR", text, op, ERROR)
            return
        image.checksum, image.virtual_size = self._hex(32), image.size
        self._touch(image, "active")
        self._glance("image.upload", "INFO", payloads.image_payload(image, importing=True), op, END)
        yield 0.05
        self._glance("image.activate", "INFO", payloads.image_payload(image))
        self._glance("image.update", "INFO", payloads.image_payload(image))

    def _import(self, image: Image) -> Gen:
        """An interoperable image import: task create, run, processing, the upload, success or failure."""
        task = Task(self._uuid(), image.owner, self.now, self.now)
        self.tasks[task.id] = task
        self._glance("task.create", "INFO", payloads.task_payload(task))
        yield self.rng.uniform(0.5, 5)
        task.status, task.updated_at = "processing", self.now
        op = self._open("task", task.id, None)
        self._glance("task.run", "INFO", payloads.task_payload(task), op, START)
        yield self.rng.uniform(0.1, 2)
        self._glance("task.processing", "INFO", payloads.task_payload(task), op, STEP)
        yield self.rng.uniform(5, 60)
        yield from self._upload(image)
        yield self.rng.uniform(0.5, 5)
        task.updated_at = task.expires_at = self.now
        task.expires_at = self.now + timedelta(hours=48)
        if image.status != "active" or self.rng.random() < P_TASK_FAIL / 4:
            task.status = "failure"
            self._glance("task.failure", "INFO", payloads.task_payload(task), op, ERROR)
        else:
            task.status = "success"
            self._glance("task.success", "INFO", payloads.task_payload(task), op, END)

    def _download(self, image: Image, tenant: str) -> None:
        partial = self.rng.random() < P_PARTIAL_DOWNLOAD
        sent = self.rng.randrange(image.size // 2) if partial else image.size
        self._glance("image.send", "ERROR" if partial else "INFO",
                     payloads.image_send_payload(image, sent, tenant, self._hex(32)))

    def _members(self, image: Image) -> Gen:
        member = self.rng.choice(self.projects)
        created = self.now
        self._glance("image.member.create", "INFO", payloads.member_payload(image, member, "pending", created, created))
        yield self.rng.uniform(60, 3600)
        self._glance("image.member.update", "INFO",
                     payloads.member_payload(image, member, self.rng.choice(("accepted", "rejected")), created, self.now))
        image.members.append(member)

    def _image_life(self, image: Image, index: int, new: bool) -> Gen:
        if new:
            image.created_at = image.updated_at = self.now
            self._glance("image.create", "INFO", payloads.image_payload(image))
            yield self.rng.uniform(1, 10)
        while not self.closing and self.images[index] is image:
            wait = self._guard(image.id)
            if wait:
                yield wait
                continue
            if image.status != "active":
                yield from (self._import(image) if self.rng.random() < 0.4 else self._upload(image))
            else:
                roll = self.rng.random()
                if roll < 0.80:
                    self._download(image, self.rng.choice(self.projects))
                elif roll < 0.88:
                    yield from self._members(image)
                elif roll < 0.99:
                    self._touch(image)
                    self._glance("image.update", "INFO", payloads.image_payload(image))
                else:  # retired; a new image takes its place
                    self._touch(image, "deleted")
                    self._glance("image.delete", "INFO", payloads.image_payload(image, deleted_at=self.now))
                    fresh = self._new_image(index, active=False)
                    fresh.created_at = fresh.updated_at = self.now
                    self.images[index] = fresh
                    self._spawn(self._image_life(fresh, index, True), self.rng.uniform(60, 600))
                    return
            yield self.rng.expovariate(2.0 / self.think_s)
