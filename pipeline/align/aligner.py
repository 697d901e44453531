"""Face detection and OpenFace-style alignment with dlib's 68 landmarks.

``openface`` mode reproduces OpenFace's ``AlignDlib.align``: a 3-point affine
transform of landmarks [39, 42, 57] (or [36, 45, 33]) onto ``size * MINMAX_TEMPLATE``.
``similarity`` mode fits a least-squares similarity transform (rotation,
uniform scale, translation; no shear) of all 68 landmarks onto the same
template, which avoids the stretched faces a 3-point affine gives on noisy
landmarks.

:class:`FaceAligner` detects faster than OpenFace's tool without losing the
faces it finds (see :func:`detection_scale` and docs/alignment.md);
``facegan-align align INPUT_DIR OUTPUT_DIR`` is the command line
(:mod:`pipeline.align.cli`).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.imaging import ArrayPhoto, Photo
from pipeline.settings import one_of, require

# OpenFace's 68-point mean face (openface/align_dlib.py, Apache 2.0), as (x, y).
TEMPLATE = np.float32([
    (0.0792396913815, 0.339223741112), (0.0829219487236, 0.456955367943),
    (0.0967927109165, 0.575648016728), (0.122141515615, 0.691921601066),
    (0.168687863544, 0.800341263616), (0.239789390707, 0.895732504778),
    (0.325662452515, 0.977068762493), (0.422318282013, 1.04329000149),
    (0.531777802068, 1.06080371126), (0.641296298053, 1.03981924107),
    (0.738105872266, 0.972268833998), (0.824444363295, 0.889624082279),
    (0.894792677532, 0.792494155836), (0.939395486253, 0.681546643421),
    (0.96111933829, 0.562238253072), (0.970579841181, 0.441758925744),
    (0.971193274221, 0.322118743967), (0.163846223133, 0.249151738053),
    (0.21780354657, 0.204255863861), (0.291299351124, 0.192367318323),
    (0.367460241458, 0.203582210627), (0.4392945113, 0.233135599851),
    (0.586445962425, 0.228141644834), (0.660152671635, 0.195923841854),
    (0.737466449096, 0.182360984545), (0.813236546239, 0.192828009114),
    (0.8707571886, 0.235293377042), (0.51534533827, 0.31863546193),
    (0.516221448289, 0.396200446263), (0.517118861835, 0.473797687758),
    (0.51816430343, 0.553157797772), (0.433701156035, 0.604054457668),
    (0.475501237769, 0.62076344024), (0.520712933176, 0.634268222208),
    (0.565874114041, 0.618796581487), (0.607054002672, 0.60157671656),
    (0.252418718401, 0.331052263829), (0.298663015648, 0.302646354002),
    (0.355749724218, 0.303020650651), (0.403718978315, 0.33867711083),
    (0.352507175597, 0.349987615384), (0.296791759886, 0.350478978225),
    (0.631326076346, 0.334136672344), (0.679073381078, 0.29645404267),
    (0.73597236153, 0.294721285802), (0.782865376271, 0.321305281656),
    (0.740312274764, 0.341849376713), (0.68499850091, 0.343734332172),
    (0.353167761422, 0.746189164237), (0.414587777921, 0.719053835073),
    (0.477677654595, 0.706835892494), (0.522732900812, 0.717092275768),
    (0.569832064287, 0.705414478982), (0.635195811927, 0.71565572516),
    (0.69951672331, 0.739419187253), (0.639447159575, 0.805236879972),
    (0.576410514055, 0.835436670169), (0.525398405766, 0.841706377792),
    (0.47641545769, 0.837505914975), (0.41379548902, 0.810045601727),
    (0.380084785646, 0.749979603086), (0.477955996282, 0.74513234612),
    (0.523389793327, 0.748924302636), (0.571057789237, 0.74332894691),
    (0.672409137852, 0.744177032192), (0.572539621444, 0.776609286626),
    (0.5240106503, 0.783370783245), (0.477561227414, 0.778476346951),
])
TPL_MIN, TPL_MAX = TEMPLATE.min(axis=0), TEMPLATE.max(axis=0)
#: The template normalised to [0, 1] in x and y, as OpenFace uses it.
MINMAX_TEMPLATE = (TEMPLATE - TPL_MIN) / (TPL_MAX - TPL_MIN)

#: OpenFace's landmark triples for the 3-point affine.
LANDMARK_SETS = {
    "innerEyesAndBottomLip": (39, 42, 57),
    "outerEyesAndNose": (36, 45, 33),
}
MODES = ("openface", "similarity")
DETECTORS = ("hog", "cnn")

#: Width in detection pixels below which dlib's detectors report no face: HOG's
#: 80x80 window reports boxes down to ~72 px, MMOD's boxes are >= 80 px. Faces
#: wanted must measure at least this at the detection scale.
DETECTOR_WINDOW = 80
#: Width in decoded pixels a face must keep when a JPEG is decoded at reduced
#: size for landmarks and warping (measured: landmarks move <= 0.015
#: inter-ocular distances from their full-resolution positions at >= 130 px).
LANDMARK_FACE = 160
#: Detector scores below this are weak: real faces score above it ~99% of the
#: time on CelebA, and the false positives seen (flags, fabric) score 0.0-0.05.
#: The largest face is chosen among stronger boxes when there are any.
WEAK_SCORE = 0.1


class NoFace(ValueError):
    """An image gave no aligned face; ``reason`` is ``no_face``, ``too_small``
    or ``alignment_failed`` and goes into the rejection log with ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def model_path(name: str) -> str:
    """Path of a dlib model file shipped in the ``face-recognition-models`` package.

    Found without importing the package, whose ``__init__`` needs the
    deprecated ``pkg_resources``.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package face-recognition-models is not installed; run `make venv`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise RuntimeError(f"dlib model {path} is missing; reinstall face-recognition-models")
    return str(path)


@lru_cache(maxsize=None)
def _dlib_models(detector: str):
    # Loaded once per process (and shared with forked workers): the 68-point
    # predictor alone is ~100 MB.
    import dlib
    predictor = dlib.shape_predictor(model_path("shape_predictor_68_face_landmarks.dat"))
    if detector == "cnn":
        det = dlib.cnn_face_detection_model_v1(model_path("mmod_human_face_detector.dat"))
    else:
        det = dlib.get_frontal_face_detector()
    return det, predictor


def template_points(size: int, margin: float = 0.0) -> np.ndarray:
    """The 68 template points in output pixels, ``(68, 2) float32``.

    ``margin`` is the fraction of the output left around the template on each
    side (0 reproduces OpenFace; 0.1 shows more forehead, chin and ears).
    """
    return np.float32(size * (margin + (1.0 - 2.0 * margin) * MINMAX_TEMPLATE))


def openface_transform(landmarks: np.ndarray, size: int, indices=LANDMARK_SETS["innerEyesAndBottomLip"],
                       margin: float = 0.0) -> np.ndarray:
    """OpenFace's 3-point affine, ``(2, 3) float64``, mapping source to output pixels."""
    import cv2
    idx = np.asarray(indices)
    return cv2.getAffineTransform(np.float32(landmarks)[idx],
                                  template_points(size, margin)[idx]).astype(np.float64)


def similarity_transform(landmarks: np.ndarray, size: int, margin: float = 0.0) -> np.ndarray:
    """Least-squares similarity (Umeyama) of all 68 points, ``(2, 3) float64``."""
    src = np.asarray(landmarks, np.float64)
    dst = np.asarray(template_points(size, margin), np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    # Umeyama (1991): the rotation from the SVD of the cross-covariance.
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    var = (s ** 2).sum() / len(src)
    if var < 1e-12 or sigma.sum() < 1e-12:
        raise ValueError("degenerate landmarks: cannot fit a similarity transform")
    rotation = u @ sign @ vt
    scale = (sigma * np.diag(sign)).sum() / var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` points through a ``(2, 3)`` affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def detection_scale(width: int, height: int, upsample: int = 1, detect_side: int = 0,
                    min_face: int = 0) -> float:
    """The scale (detection pixels per source pixel) at which to run the detector.

    OpenFace detects at ``2 ** upsample`` (dlib upsamples the full image), which
    finds faces down to ~36 source px at any image size and costs 4x the pixels
    per upsample. Here the scale is as small as the faces wanted allow:

    * ``min_face > 0``: faces of ``min_face`` source px just fill the detector
      window (:data:`DETECTOR_WINDOW`), so every face >= ``min_face`` is still found;
    * else ``detect_side > 0``: the longer side becomes ``detect_side * 2 ** upsample``
      (faces below ~1/16 of the longer side at 640 are not searched for);
    * never above ``2 ** upsample``, so small photos are searched as finely as OpenFace does.
    """
    finest = 2.0 ** upsample
    if min_face > 0:
        return min(finest, DETECTOR_WINDOW / min_face)
    if detect_side > 0:
        return min(finest, finest * detect_side / max(width, height, 1))
    return finest


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def dedupe_boxes(boxes, iou: float = 0.5):
    """Drop boxes overlapping a higher-scoring one by ``iou`` or more.

    dlib's HOG detector runs five sub-detectors (frontal, left, right, ...) and
    can report the same face twice; with ``all_faces`` that would be two faces.
    ``boxes`` is a list of ``((left, top, right, bottom), score)``.
    """
    kept = []
    for box, score in sorted(boxes, key=lambda b: -b[1]):
        if all(_iou(box, k[0]) < iou for k in kept):
            kept.append((box, score))
    return kept


@dataclass
class Face:
    """One aligned face and where it came from (all coordinates in source pixels)."""
    image: np.ndarray            # (size, size, 3) uint8 RGB
    box: tuple[int, int, int, int]  # left, top, right, bottom
    score: float                 # detector confidence
    landmarks: np.ndarray        # (68, 2) float32
    transform: np.ndarray        # (2, 3) float64, source -> aligned pixels
    mode: str

    def meta(self) -> dict:
        """JSON-serialisable description (everything but the pixels)."""
        return {"box": list(self.box), "score": round(float(self.score), 4),
                "landmarks": np.round(self.landmarks, 2).tolist(),
                "transform": np.round(self.transform, 6).tolist(), "mode": self.mode}


@dataclass
class FaceAligner:
    """Detects faces with dlib and warps each to a ``size`` x ``size`` crop.

    Works on an encoded :class:`pipeline.imaging.Photo` (:meth:`align_photo`:
    decoded once, at 1/2, 1/4 or 1/8 size for JPEGs so large that the smallest
    face searched for keeps :data:`LANDMARK_FACE` px, see :meth:`decode_factor`)
    or on a decoded RGB array (:meth:`align`). Detection runs on a grayscale
    copy resized to :func:`detection_scale` (``upsample``, ``detect_side``,
    ``min_face``) and boxes are mapped back to source pixels. For the largest
    face only (``all_faces=False``) it runs coarse to fine (:meth:`passes`):
    up to two octaves coarser first, each a quarter of the pixels of the next,
    and a pass that finds a face scoring at least :data:`WEAK_SCORE` settles
    it, since a finer pass only adds smaller faces. Landmarks are found on the
    decoded RGB image. Faces narrower than ``min_face`` source pixels (box
    width) are ignored. The largest face is the largest box, as in OpenFace,
    among boxes scoring at least :data:`WEAK_SCORE` when there are any.
    """
    size: int = 64
    mode: str = "openface"
    landmarks: str = "innerEyesAndBottomLip"
    margin: float = 0.0
    detector: str = "hog"
    upsample: int = 1
    detect_side: int = 640
    min_face: int = 0
    all_faces: bool = False
    _models: tuple = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        one_of("mode", self.mode, MODES)
        one_of("landmarks", self.landmarks, tuple(LANDMARK_SETS))
        one_of("detector", self.detector, DETECTORS)
        require(0.0 <= self.margin < 0.5, "margin", self.margin, "in [0, 0.5)")
        require(self.size >= 8, "size", self.size, "at least 8 (pixels)")
        require(0 <= self.upsample <= 4, "upsample", self.upsample, "in 0..4")
        require(self.detect_side >= 0, "detect_side", self.detect_side, ">= 0 (0 = full resolution)")
        require(self.min_face >= 0, "min_face", self.min_face, ">= 0 (0 = any face)")

    def __getstate__(self):
        # Sent to worker processes without the dlib models; each loads (or,
        # forked, inherits) its own.
        state = dict(self.__dict__)
        state["_models"] = None
        return state

    def _dlib(self):
        if self._models is None:
            self._models = _dlib_models(self.detector)
        return self._models

    def scale(self, width: int, height: int) -> float:
        """Detection pixels per source pixel for a ``width`` x ``height`` photo."""
        return detection_scale(width, height, self.upsample, self.detect_side, self.min_face)

    def passes(self, width: int, height: int) -> list[float]:
        """The detection scales tried, coarsest first: :meth:`scale`, and for
        the largest face one or two octaves coarser where they can still find
        a face of three quarters of the shorter side in the detector window."""
        scales = [self.scale(width, height)]
        if not self.all_faces:
            while len(scales) < 3 and DETECTOR_WINDOW / (scales[0] / 2) <= 0.75 * min(width, height):
                scales.insert(0, scales[0] / 2)
        return scales

    def decode_factor(self, width: int, height: int) -> int:
        """How many times (1, 2, 4 or 8) a ``width`` x ``height`` JPEG may be
        reduced at decoding: the finest detection pass must not need upscaling
        from it, and the smallest face searched for must keep
        ``max(LANDMARK_FACE, 2 * size)`` px for landmarks and warping."""
        scale = self.scale(width, height)
        smallest = self.min_face or DETECTOR_WINDOW / scale
        limit = min(1.0 / scale, smallest / max(LANDMARK_FACE, 2 * self.size))
        factor = 1
        while factor < 8 and 2 * factor <= limit:
            factor *= 2
        return factor

    def _run_detector(self, img: np.ndarray):
        detector, _ = self._dlib()
        if self.detector == "cnn":
            return [(d.rect, d.confidence) for d in detector(img, 0)]
        rects, scores, _ = detector.run(img, 0, 0.0)
        return list(zip(rects, scores))

    def _detect_at(self, photo: ArrayPhoto, scale: float, base: np.ndarray):
        """Boxes (source px) and scores of one detection pass at ``scale``
        detection px per source px, on ``base`` resized."""
        import cv2
        h, w = base.shape[:2]
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        img = base
        if size != (w, h):
            down = size[0] < w
            img = cv2.resize(base, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)
        sx, sy = size[0] / photo.width, size[1] / photo.height
        # Not clipped to the image: a face cut by the border keeps its true box
        # (as in OpenFace), and the landmark predictor copes with the outside.
        boxes = [((round(r.left() / sx), round(r.top() / sy), round(r.right() / sx),
                   round(r.bottom() / sy)), float(score)) for r, score in self._run_detector(img)]
        return [b for b in boxes if b[0][2] > b[0][0] and b[0][3] > b[0][1]]

    @staticmethod
    def _sorted(boxes):
        """Largest area first (OpenFace's order)."""
        return sorted(boxes, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]), reverse=True)

    def find_faces(self, photo: ArrayPhoto) -> list[tuple[tuple[int, int, int, int], float]]:
        """Deduplicated face boxes ``(left, top, right, bottom)`` in source pixels
        with scores, largest first. With ``all_faces`` off, the passes stop at
        the first that finds a face of at least ``min_face`` px scoring
        :data:`WEAK_SCORE` (weak boxes alone do not settle it: the finer pass
        runs too and every pass's boxes count)."""
        import cv2
        found = []
        scales = self.passes(photo.width, photo.height)
        # Grayscale for HOG: a third of the gradient work of dlib's per-channel
        # HOG; cv2 resizes replace dlib's slower pyramid_up. The coarser passes
        # are made from the finest pass's image, the largest resize done once.
        base = photo.gray() if self.detector == "hog" else photo.as_rgb(photo.pixels)
        finest = (max(1, round(photo.width * scales[-1])), max(1, round(photo.height * scales[-1])))
        if len(scales) > 1 and finest[0] < base.shape[1]:
            base = cv2.resize(base, finest, interpolation=cv2.INTER_AREA)
        for i, scale in enumerate(scales):
            boxes = self._detect_at(photo, scale, base)
            found += boxes
            last = i == len(scales) - 1
            if not last and any(b[0][2] - b[0][0] >= self.min_face and b[1] >= WEAK_SCORE for b in boxes):
                break
        return self._sorted(dedupe_boxes(found))

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Every face box ``(left, top, right, bottom)`` in ``rgb`` pixels with
        scores, largest first, at least ``min_face`` wide (whatever ``all_faces``)."""
        from dataclasses import replace
        every = replace(self, all_faces=True)
        every._models = self._models
        return [b for b in every.find_faces(ArrayPhoto(rgb)) if b[0][2] - b[0][0] >= self.min_face]

    def find_landmarks(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 68 landmarks ``(68, 2) float32`` of the face in ``box`` (``rgb`` pixels)."""
        import dlib
        _, predictor = self._dlib()
        shape = predictor(rgb, dlib.rectangle(*(int(v) for v in box)))
        return np.float32([(p.x, p.y) for p in shape.parts()])

    def transform(self, landmarks: np.ndarray) -> np.ndarray:
        """The source-to-output ``(2, 3)`` matrix for this aligner's mode."""
        if self.mode == "openface":
            return openface_transform(landmarks, self.size, LANDMARK_SETS[self.landmarks], self.margin)
        return similarity_transform(landmarks, self.size, self.margin)

    def warp(self, rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Apply ``matrix`` to ``rgb``: the ``(size, size, 3)`` aligned crop."""
        import cv2
        # Bilinear, black outside the source, as OpenFace's cv2.warpAffine.
        return cv2.warpAffine(rgb, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR)

    def align(self, rgb: np.ndarray, factor: int = 1, strict: bool = False) -> list[Face]:
        """All faces (or the largest, unless ``all_faces``) of an RGB image, aligned.

        ``rgb`` is ``(H, W, 3) uint8``; ``factor`` says it is the source photo
        reduced that many times: boxes, landmarks and transforms are still
        reported in source pixels. See :meth:`align_photo`.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
        return self._align(ArrayPhoto(rgb, factor), strict)

    def align_photo(self, photo: Photo, strict: bool = False) -> list[Face]:
        """All faces (or the largest, unless ``all_faces``) of an encoded photo, aligned.

        The photo is decoded once, at :meth:`decode_factor`. With ``strict``,
        no face raises :class:`NoFace` (reason ``no_face``, ``too_small`` or
        ``alignment_failed``) instead of returning ``[]``.
        """
        return self._align(ArrayPhoto(*photo.pixels(self.decode_factor(photo.width, photo.height))), strict)

    def _align(self, photo: ArrayPhoto, strict: bool) -> list[Face]:
        found = self.find_faces(photo)
        boxes = [b for b in found if b[0][2] - b[0][0] >= self.min_face]
        if not self.all_faces:
            # OpenFace's rule (largest area), but a weak box only when nothing stronger was found
            boxes = ([b for b in boxes if b[1] >= WEAK_SCORE] or boxes)[:1]
        faces, failed = [], []
        if boxes:
            pixels, factor = photo.pixels, photo.factor
            # rgb pixel p is source pixel (p + 0.5) * factor - 0.5
            to_source = np.float64([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2]])
            for box, score in boxes:
                local = [(v - (factor - 1) / 2) / factor for v in box]
                points = self.find_landmarks(pixels, [round(v) for v in local])  # same in BGR
                src_points = np.float32(apply_transform(to_source, points))
                try:
                    matrix = self.transform(src_points)
                except ValueError as exc:
                    failed.append(str(exc))
                    continue
                # source -> output composed with rgb -> source, for warping rgb itself
                warp = matrix.copy()
                warp[:, :2] = matrix[:, :2] * factor
                warp[:, 2] = matrix[:, 2] + matrix[:, :2] @ to_source[:, 2]
                faces.append(Face(photo.as_rgb(self.warp(pixels, warp)), box, score, src_points, matrix,
                                  self.mode))
        if not faces and strict:
            if failed:
                raise NoFace("alignment_failed", failed[0])
            if found:
                widest = found[0][0][2] - found[0][0][0]
                raise NoFace("too_small", f"largest face {widest} px is narrower than min_face {self.min_face}")
            w, h = photo.width, photo.height
            smallest = self.min_face or round(DETECTOR_WINDOW / self.scale(w, h))
            raise NoFace("no_face", f"no face of >= {smallest} px in {w}x{h}")
        return faces
