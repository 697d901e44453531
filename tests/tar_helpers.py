"""Building tar archives in memory for the source tests (ImageNet's tar of tars)."""
from __future__ import annotations

import io
import tarfile


def tar_bytes(files: dict[str, bytes], extra: tarfile.TarInfo | None = None) -> bytes:
    """An uncompressed tar holding ``files`` (name -> bytes), plus ``extra`` (a link, say) last."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extra is not None:
            tf.addfile(extra)
    return buf.getvalue()
