"""Does the predicted localisation quality track the real IoU?

GFocalV2's DGQP turns the shape of the four edge distributions into a quality
estimate; the joint score ``sigmoid(cls) * quality`` ranks the detections. This
module measures, on a labelled COCO-format dataset, how well each candidate
ranking signal correlates with the IoU that the detections really reach:

* ``numbers``: ``pearson``, ``match_detections``, ``correlations`` (NumPy);
* ``collect``: ``collect_positive_predictions``, the positive detections of a
  model, each with its real IoU, DGQP quality, classification score, joint
  score and per-edge top-1 probability;
* ``figures``: ``quality_vs_iou_figure`` / ``distribution_figure`` (matplotlib);
* ``report``: ``analyze``, all of it for one model (and optionally a GFocalV1
  model to compare), the ``gfocal analyze`` command.

**Positive predictions.** They are what a user of the model sees: the final
detections of the model's own post-processing (per-level pre-NMS top-k, joint
score above ``score_threshold``, class-wise NMS, ``max_detections`` per
image), each matched to the ground-truth box *of its own class* with which its
box has the highest IoU; a detection is positive when that IoU is at least
``iou_floor`` (0.1). Boxes and ground truth are compared in the model-input
(resized image) pixels, boxes clipped to the resized image as ``gfocal
evaluate`` clips them. Images are resized as evaluation resizes them
(``keras_gfocal.data.input_resize``): the model's canvas, or for a converted
model without one the reference's test resize, so the detections analysed are
the ones evaluated. The matching is not one-to-one (unlike COCO
evaluation): two detections of one object are both kept, since each one's own
localisation is what is judged. Detections of the wrong class or on
background are left out.
"""

from keras_gfocal.analysis.collect import collect_positive_predictions
from keras_gfocal.analysis.figures import distribution_figure, quality_vs_iou_figure
from keras_gfocal.analysis.numbers import SIGNALS, box_iou_matrix, correlations, match_detections, pearson
from keras_gfocal.analysis.report import analyze

__all__ = [
    "SIGNALS",
    "analyze",
    "box_iou_matrix",
    "collect_positive_predictions",
    "correlations",
    "distribution_figure",
    "match_detections",
    "pearson",
    "quality_vs_iou_figure",
]
