"""Face detection and OpenFace-style alignment with dlib's 68 landmarks.

``openface`` mode reproduces OpenFace's ``AlignDlib.align``: a 3-point affine
transform of landmarks [39, 42, 57] (or [36, 45, 33]) onto ``size * MINMAX_TEMPLATE``.
``similarity`` mode fits a least-squares similarity transform (rotation,
uniform scale, translation; no shear) of all 68 landmarks onto the same
template, which avoids the stretched faces a 3-point affine gives on noisy
landmarks.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

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
    # Loaded once per process: the 68-point predictor alone is ~100 MB.
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
    from skimage.transform import SimilarityTransform
    tf = SimilarityTransform()
    if not tf.estimate(np.float64(landmarks), np.float64(template_points(size, margin))):
        raise ValueError("degenerate landmarks: cannot fit a similarity transform")
    return tf.params[:2].copy()


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` points through a ``(2, 3)`` affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


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

    Detection runs on a copy downscaled so its longer side is at most
    ``detect_side`` pixels (0: never downscale), and boxes are mapped back;
    landmarks are then found on the full-resolution image, so downscaling
    costs speed-ups, not landmark accuracy. Faces smaller than ``min_face``
    source pixels (box width) are ignored.
    """
    size: int = 64
    mode: str = "openface"
    landmarks: str = "innerEyesAndBottomLip"
    margin: float = 0.0
    detector: str = "hog"
    upsample: int = 1
    detect_side: int = 0
    min_face: int = 0
    all_faces: bool = False
    _models: tuple = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.landmarks not in LANDMARK_SETS:
            raise ValueError(f"landmarks must be one of {tuple(LANDMARK_SETS)}, got {self.landmarks!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")

    def _dlib(self):
        if self._models is None:
            self._models = _dlib_models(self.detector)
        return self._models

    def detect(self, rgb: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """Face boxes ``(left, top, right, bottom)`` in ``rgb`` pixels with scores,
        largest first."""
        import cv2
        detector, _ = self._dlib()
        h, w = rgb.shape[:2]
        scale = 1.0
        img = rgb
        if self.detect_side and max(h, w) > self.detect_side:
            scale = self.detect_side / max(h, w)
            img = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        if self.detector == "cnn":
            found = [(d.rect, d.confidence) for d in detector(img, self.upsample)]
        else:
            rects, scores, _ = detector.run(img, self.upsample, 0.0)
            found = list(zip(rects, scores))
        boxes = []
        for r, s in found:
            box = (round(r.left() / scale), round(r.top() / scale),
                   round(r.right() / scale), round(r.bottom() / scale))
            if box[2] - box[0] >= self.min_face:
                boxes.append((box, float(s)))
        boxes.sort(key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]), reverse=True)
        return boxes

    def find_landmarks(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 68 landmarks ``(68, 2) float32`` of the face in ``box``."""
        import dlib
        _, predictor = self._dlib()
        shape = predictor(rgb, dlib.rectangle(*box))
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

    def align(self, rgb: np.ndarray) -> list[Face]:
        """All faces (or the largest, unless ``all_faces``) of an RGB image, aligned."""
        rgb = np.ascontiguousarray(rgb)
        boxes = self.detect(rgb)
        if not self.all_faces:
            boxes = boxes[:1]
        faces = []
        for box, score in boxes:
            points = self.find_landmarks(rgb, box)
            matrix = self.transform(points)
            faces.append(Face(self.warp(rgb, matrix), box, score, points, matrix, self.mode))
        return faces
