"""CaloChallenge's classifier test: can a network tell generated showers from Geant4 ones?

The recipe of CaloChallenge ``code/evaluate.py`` (modes ``cls-low`` and ``cls-high``), written
for TensorFlow (reference: quality.md section 3):

- Inputs, after voxels below 1 MeV are set to 0: ``high`` the FPD/KPD feature vector
  (``bologan.physics_distance.feature_vector``); ``low`` log10 E_inc followed by every voxel
  divided by E_inc. Label 0 for generated, 1 for reference showers.
- Split: each sample shuffled and cut to the smaller one's length, then 60 % train, 20 % test,
  20 % validation of each (counts truncated to integers), the two classes merged and shuffled.
- Network: three hidden layers of 2048 units, each followed by LeakyReLU (slope 0.01; dropout 0),
  one logit out; weights and biases drawn as PyTorch's ``nn.Linear`` draws them
  (uniform in +-1/sqrt(fan_in)); float64, as the reference sets torch's default dtype.
- Training: binary cross-entropy on the logit, Adam (learning rate 2e-4, epsilon 1e-8), batches
  of 1000 reshuffled every epoch, ``EPOCHS`` epochs; after each epoch the accuracy on the test
  split, and the weights of the best epoch (strictly higher accuracy) are kept; training stops
  early at accuracy 1.
- Result: the best epoch's sigmoid outputs are calibrated by isotonic regression fitted on the
  test split (outputs clipped to [1e-6, 1 - 1e-6], inputs outside the fitted range clamped);
  on the validation split, the calibrated outputs give the AUC and
  JSD = (ln 2 - BCE) / ln 2 (0: indistinguishable, 1: perfectly separated).

AUC (midranks for ties) and isotonic regression (pool adjacent violators) are written here
with numpy: scikit-learn is not installed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from bologan.features import Features, VOXEL_THRESHOLD_MEV
from bologan.physics_distance import feature_vector

INPUT_KINDS = ("high", "low")
HIDDEN_LAYERS = 3
HIDDEN_UNITS = 2048
LEAKY_SLOPE = 0.01            # torch.nn.LeakyReLU's default (Keras's is 0.3)
LEARNING_RATE = 2e-4
ADAM_EPSILON = 1e-8           # torch.optim.Adam's default (Keras's is 1e-7)
BATCH_SIZE = 1000
EPOCHS = 50
SPLIT = (0.6, 0.2, 0.2)       # train, test (epoch choice and calibration), validation (result)
CALIBRATION_CLIP = 1e-6
BCE_LOG_FLOOR = -100.0        # torch.nn.BCELoss clamps its logarithms here


# ----------------------------------------------------------------------- numpy pieces

def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random label-1 score exceeds a random
    label-0 one, ties counting one half (Mann-Whitney U with midranks)."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both labels")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


@dataclass(frozen=True)
class IsotonicCalibration:
    """A non-decreasing step map from classifier outputs to calibrated probabilities, linear
    between its knots and constant beyond them."""
    knots: np.ndarray
    values: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, lo: float = CALIBRATION_CLIP,
            hi: float = 1.0 - CALIBRATION_CLIP) -> "IsotonicCalibration":
        """Least-squares non-decreasing fit of ``labels`` against ``scores`` (equal scores first
        averaged into one weighted point), by pooling adjacent violators; clipped to [lo, hi]."""
        x = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=np.float64).ravel()
        knots, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        means = np.bincount(inverse, weights=y) / counts
        value: list[float] = []
        weight: list[float] = []
        width: list[int] = []
        for v, w in zip(means, counts.astype(np.float64), strict=True):
            value.append(float(v))
            weight.append(float(w))
            width.append(1)
            while len(value) > 1 and value[-2] > value[-1]:
                w2 = weight[-2] + weight[-1]
                value[-2] = (value[-2] * weight[-2] + value[-1] * weight[-1]) / w2
                weight[-2], width[-2] = w2, width[-2] + width[-1]
                del value[-1], weight[-1], width[-1]
        fitted = np.clip(np.repeat(value, width), lo, hi)
        return cls(knots=knots, values=fitted)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=np.float64), self.knots, self.values)


def binary_cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -[y log p + (1 - y) log(1 - p)], logarithms floored at -100 as torch does."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), BCE_LOG_FLOOR)
        log_q = np.maximum(np.log1p(-p), BCE_LOG_FLOOR)
    return float(-np.mean(y * log_p + (1.0 - y) * log_q))


def jsd_from_bce(bce: float) -> float:
    """The classifier's Jensen-Shannon divergence estimate in bits: (ln 2 - BCE) / ln 2."""
    return (math.log(2.0) - bce) / math.log(2.0)


# ----------------------------------------------------------------------- inputs and split

def high_level_inputs(features: Features) -> np.ndarray:
    """cls-high inputs: the FPD/KPD feature vector."""
    return feature_vector(features)


def low_level_inputs(incident_energies_mev: np.ndarray, voxels_mev: np.ndarray,
                     threshold_mev: float = VOXEL_THRESHOLD_MEV) -> np.ndarray:
    """cls-low inputs: log10 E_inc, then every voxel (below ``threshold_mev`` set to 0) / E_inc."""
    e_inc = np.asarray(incident_energies_mev, dtype=np.float64).reshape(-1, 1)
    voxels = np.asarray(voxels_mev, dtype=np.float64)
    voxels = np.where(voxels < threshold_mev, 0.0, voxels)
    return np.concatenate([np.log10(e_inc), voxels / e_inc], axis=1)


@dataclass(frozen=True)
class Split:
    """Inputs and labels (1 = reference) of the train, test and validation splits."""
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    validation: tuple[np.ndarray, np.ndarray]


def train_test_validation(generated: np.ndarray, reference: np.ndarray, seed: int) -> Split:
    """CaloChallenge's split (see the module docstring); ``seed`` makes it reproducible."""
    rng = np.random.default_rng(seed)
    n = min(len(generated), len(reference))
    counts = (n * np.array(SPLIT)).astype(int)
    cuts = np.cumsum(counts)[:-1]
    parts = []
    for label, sample in ((0.0, generated), (1.0, reference)):
        rows = np.asarray(sample, dtype=np.float64)[rng.permutation(len(sample))[:n]]
        parts.append([(p, np.full(len(p), label)) for p in np.split(rows, cuts)])
    merged = []
    for (x0, y0), (x1, y1) in zip(*parts, strict=True):
        x, y = np.concatenate([x0, x1]), np.concatenate([y0, y1])
        order = rng.permutation(len(x))
        merged.append((x[order], y[order]))
    if min(len(y) for _, y in merged) == 0 or any(len(np.unique(y)) < 2 for _, y in merged):
        raise ValueError(f"{n} showers per sample are too few for a 60/20/20 split of both classes")
    return Split(*merged)


# ----------------------------------------------------------------------- the network

@dataclass(frozen=True)
class ClassifierResult:
    """Validation-split AUC and JSD of the calibrated classifier, and what training took."""
    inputs: str                    # "high" or "low"
    auc: float
    jsd: float
    best_epoch: int                # 1-based, by test-split accuracy
    epochs_run: int
    train_showers: int             # per class
    train_s: float                 # wall time of training and scoring, s
    s_per_epoch: float


def build_network(input_dim: int, seed: int):
    """The classifier (logit out), float64, initialised as PyTorch initialises ``nn.Linear``."""
    import tensorflow as tf

    layers = [tf.keras.Input(shape=(input_dim,), dtype=tf.float64)]
    fan_in = input_dim
    x = layers[0]
    for k in range(HIDDEN_LAYERS + 1):
        units = HIDDEN_UNITS if k < HIDDEN_LAYERS else 1
        bound = 1.0 / math.sqrt(fan_in)
        x = tf.keras.layers.Dense(
            units, dtype=tf.float64,
            kernel_initializer=tf.keras.initializers.RandomUniform(-bound, bound, seed=seed + 2 * k),
            bias_initializer=tf.keras.initializers.RandomUniform(-bound, bound, seed=seed + 2 * k + 1))(x)
        if k < HIDDEN_LAYERS:
            x = tf.keras.layers.LeakyReLU(alpha=LEAKY_SLOPE, dtype=tf.float64)(x)
        fan_in = units
    return tf.keras.Model(layers[0], x)


def _probabilities(model, x: np.ndarray) -> np.ndarray:
    logits = model.predict(x, batch_size=BATCH_SIZE, verbose=0).ravel()
    return 1.0 / (1.0 + np.exp(-logits))


def train_classifier(generated: np.ndarray, reference: np.ndarray, inputs: str, epochs: int = EPOCHS,
                     seed: int = 0, log=None) -> ClassifierResult:
    """Train and score the classifier on two input arrays (rows: showers) of one kind."""
    import tensorflow as tf

    if inputs not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {inputs!r}")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    split = train_test_validation(generated, reference, seed)
    t0 = time.perf_counter()
    tf.keras.utils.set_random_seed(seed)
    model = build_network(split.train[0].shape[1], seed)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE, epsilon=ADAM_EPSILON),
                  loss=tf.keras.losses.BinaryCrossentropy(from_logits=True))
    best_accuracy, best_epoch, best_weights, ran = -math.inf, 0, None, 0
    x_test, y_test = split.test
    for epoch in range(1, epochs + 1):
        model.fit(*split.train, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0)
        ran = epoch
        accuracy = float(np.mean(np.round(_probabilities(model, x_test)) == y_test))
        if log is not None:
            log(f"classifier epoch {epoch}/{epochs}: test accuracy {accuracy:.4f}")
        if accuracy > best_accuracy:
            best_accuracy, best_epoch, best_weights = accuracy, epoch, model.get_weights()
        if accuracy == 1.0:
            break
    model.set_weights(best_weights)
    calibrate = IsotonicCalibration.fit(_probabilities(model, x_test), y_test)
    x_val, y_val = split.validation
    calibrated = calibrate(_probabilities(model, x_val))
    elapsed = time.perf_counter() - t0
    return ClassifierResult(inputs=inputs, auc=roc_auc(y_val, calibrated),
                            jsd=jsd_from_bce(binary_cross_entropy(calibrated, y_val)),
                            best_epoch=best_epoch, epochs_run=ran, train_showers=len(split.train[0]) // 2,
                            train_s=elapsed, s_per_epoch=elapsed / ran)
