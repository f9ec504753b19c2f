"""The errors of byte-offset I/O on a LUN (``iscsifs.block.lun``), each with the ``errno`` a file
user sees, as a class attribute.
"""

from __future__ import annotations

import errno

from iscsifs.proto.errors import IscsiError


class LunRangeError(IscsiError):
    """I/O outside the LUN. ``errno`` is what writing past the end of a disk gives."""

    errno = errno.ENOSPC


class LunCannotUnmap(IscsiError):
    """Discard asked of a LUN that cannot deallocate blocks (not thin-provisioned, VPD 0xB2)."""

    errno = errno.EOPNOTSUPP


class LunReadOnly(IscsiError):
    errno = errno.EROFS


class UnalignedRange(IscsiError):
    """A byte range that is not whole blocks inside the LUN, where only whole blocks make sense."""

    errno = errno.EINVAL


class LunGrowError(IscsiError):
    """A LUN cannot be made larger by truncating it: its size is the target's."""

    errno = errno.EFBIG


class LunRemoved(IscsiError):
    """The LUN's file went (gone from the target, or another device now): what its I/O had yet
    to send is refused, so none of it reaches whatever the target has under that number now."""

    errno = errno.ENXIO
