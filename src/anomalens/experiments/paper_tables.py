"""More of the papers' numbers, for the grid collector's "paper" column: the CE paper's appendix G
tables 5-22 (per-scenario means over 4 seeds), the OE paper's Table 1 and its per-class tables 8, 10,
11 (one vs. rest) and 17 (leave-one-class-out). ``paper_figures.py`` keeps the rows the explain
report uses; this module adds the rest without touching it.

Keys use the grid's own spelling of a scenario: ``(dataset, colored, detector, normal)`` where normal
is the canonical form of ``TrainJob.normal`` (``canonical_normal``): sorted class indices "0,1" for
class sets, a lower-case rule "red or one" otherwise. AuROCs given in % by the OE paper are stored as
fractions. Transcribed from ``shared/papers/*.md`` by script, labels kept as comments.
"""

from __future__ import annotations

import re

from anomalens.experiments.paper_figures import COLUMNS, paper_figures

# GTSRB normal sets of the CE paper (appendix G), as class indices of GTSRB's 43 classes.
GTSRB_SETS = {
    "speed limit 30 + 50": "1,2", "speed limit 50 + 70": "2,4", "speed limit 70 + 100": "4,7",
    "speed limit 100 + 120": "7,8", "give way + stop": "13,14", "danger + construction warning": "18,25",
    "all restriction ends signs": "6,32,41,42", "all speed limit signs": "0,1,2,3,4,5,7,8",
    "all blue signs": "33,34,35,36,37,38,39,40",
    "all warning signs": "11,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
}

CE_TABLES: dict[int, tuple[str, bool, str, dict[str, tuple[float, ...]]]] = {
    5: ('mnist', False, 'bce', {
        '0': (0.99, 0.78, 0.76, 0.93, 0.42, 0.97),  # zero
        '1': (1.0, 0.87, 0.66, 0.97, 0.47, 0.99),  # one
        '2': (0.97, 0.69, 0.75, 0.85, 0.56, 0.87),  # two
        '3': (0.99, 0.67, 0.77, 0.94, 0.33, 0.89),  # three
        '4': (0.97, 0.75, 0.7, 0.88, 0.48, 0.91),  # four
        '5': (0.97, 0.65, 0.66, 0.84, 0.44, 0.98),  # five
        '6': (1.0, 0.9, 0.71, 0.98, 0.33, 0.96),  # six
        '7': (0.96, 0.71, 0.7, 0.92, 0.5, 0.96),  # seven
        '8': (0.95, 0.54, 0.72, 0.87, 0.31, 0.94),  # eight
        '9': (0.96, 0.6, 0.77, 0.94, 0.47, 0.97),  # nine
    }),
    6: ('mnist', False, 'hsc', {
        '0': (0.99, 0.81, 0.84, 0.91, 0.58, 0.98),  # zero
        '1': (1.0, 0.89, 0.88, 0.95, 0.6, 0.9),  # one
        '2': (0.98, 0.72, 0.77, 0.77, 0.8, 0.92),  # two
        '3': (0.98, 0.67, 0.82, 0.85, 0.48, 0.83),  # three
        '4': (0.96, 0.73, 0.8, 0.84, 0.83, 0.81),  # four
        '5': (0.96, 0.62, 0.83, 0.7, 0.77, 0.92),  # five
        '6': (1.0, 0.88, 0.77, 0.98, 0.84, 0.95),  # six
        '7': (0.97, 0.71, 0.7, 0.92, 0.52, 0.91),  # seven
        '8': (0.95, 0.52, 0.89, 0.73, 0.88, 0.94),  # eight
        '9': (0.97, 0.59, 0.8, 0.92, 0.53, 0.91),  # nine
    }),
    7: ('mnist', False, 'dsvdd', {
        '0': (0.82, 0.01, 0.76, 0.41, 1.16, 0.96),  # zero
        '1': (1.0, 0.05, 0.99, 0.76, 1.02, 0.84),  # one
        '2': (0.72, 0.01, 0.69, 0.34, 0.89, 0.49),  # two
        '3': (0.72, 0.0, 0.7, 0.42, 0.9, 0.59),  # three
        '4': (0.72, 0.01, 0.65, 0.46, 0.88, 0.8),  # four
        '5': (0.73, 0.01, 0.71, 0.44, 0.97, 0.87),  # five
        '6': (0.83, 0.01, 0.8, 0.44, 1.08, 0.84),  # six
        '7': (0.84, 0.01, 0.8, 0.46, 1.04, 0.88),  # seven
        '8': (0.7, 0.0, 0.69, 0.46, 0.99, 0.82),  # eight
        '9': (0.81, 0.01, 0.74, 0.44, 1.09, 0.65),  # nine
    }),
    8: ('cifar10', False, 'bce', {
        '0': (0.96, 0.78, 0.47, 0.65, 1.48, 0.93),  # airplane
        '1': (0.99, 0.87, 0.62, 0.62, 1.08, 0.92),  # automobile
        '2': (0.93, 0.65, 0.42, 0.53, 1.42, 0.99),  # bird
        '3': (0.91, 0.55, 0.3, 0.53, 1.37, 0.91),  # cat
        '4': (0.96, 0.74, 0.4, 0.53, 1.09, 0.99),  # deer
        '5': (0.94, 0.64, 0.36, 0.57, 1.23, 0.93),  # dog
        '6': (0.98, 0.79, 0.5, 0.54, 0.8, 0.88),  # frog
        '7': (0.98, 0.82, 0.59, 0.64, 1.21, 0.99),  # horse
        '8': (0.98, 0.85, 0.55, 0.72, 0.93, 0.89),  # ship
        '9': (0.97, 0.78, 0.54, 0.56, 1.03, 0.88),  # truck
    }),
    9: ('cifar10', False, 'hsc', {
        '0': (0.96, 0.75, 0.51, 0.52, 2.95, 0.89),  # airplane
        '1': (0.99, 0.85, 0.58, 0.59, 1.71, 0.99),  # automobile
        '2': (0.93, 0.62, 0.46, 0.52, 4.81, 1.0),  # bird
        '3': (0.9, 0.53, 0.43, 0.52, 3.98, 1.0),  # cat
        '4': (0.96, 0.71, 0.51, 0.57, 3.45, 1.0),  # deer
        '5': (0.95, 0.65, 0.46, 0.53, 3.09, 1.0),  # dog
        '6': (0.98, 0.77, 0.52, 0.57, 2.92, 1.0),  # frog
        '7': (0.98, 0.79, 0.54, 0.54, 3.13, 1.0),  # horse
        '8': (0.98, 0.83, 0.48, 0.56, 1.86, 1.0),  # ship
        '9': (0.97, 0.77, 0.51, 0.57, 2.19, 1.0),  # truck
    }),
    10: ('cifar10', False, 'dsvdd', {
        '0': (0.48, -0.0, 0.54, 0.45, 1.28, 0.98),  # airplane
        '1': (0.51, 0.0, 0.52, 0.49, 1.15, 0.99),  # automobile
        '2': (0.54, 0.0, 0.52, 0.51, 1.23, 0.91),  # bird
        '3': (0.52, 0.0, 0.51, 0.5, 1.38, 0.98),  # cat
        '4': (0.65, 0.01, 0.62, 0.53, 1.12, 1.0),  # deer
        '5': (0.53, 0.0, 0.51, 0.5, 1.21, 0.96),  # dog
        '6': (0.6, 0.01, 0.54, 0.57, 0.99, 0.99),  # frog
        '7': (0.56, 0.0, 0.53, 0.51, 1.21, 1.0),  # horse
        '8': (0.57, 0.0, 0.58, 0.53, 0.97, 0.93),  # ship
        '9': (0.58, 0.0, 0.58, 0.48, 1.1, 0.97),  # truck
    }),
    11: ('mnist', True, 'bce', {
        'gray or one': (0.96, 0.17, 0.55, 0.75, 0.75, 0.96),  # gray+one
        'yellow or one': (0.97, 0.24, 0.56, 0.74, 0.6, 1.0),  # yellow+one
        'cyan or one': (0.96, 0.19, 0.54, 0.83, 0.38, 1.0),  # cyan+one
        'green or one': (0.99, 0.49, 0.58, 0.8, 0.6, 1.0),  # green+one
        'blue or one': (0.98, 0.48, 0.55, 0.81, 0.52, 1.0),  # blue+one
        'pink or one': (0.97, 0.25, 0.57, 0.88, 0.43, 1.0),  # pink+one
        'red or one': (0.98, 0.42, 0.54, 0.83, 0.69, 1.0),  # red+one
    }),
    12: ('mnist', True, 'hsc', {
        'gray or one': (0.92, 0.27, 0.51, 0.76, 0.86, 0.99),  # gray+one
        'yellow or one': (0.94, 0.43, 0.54, 0.82, 0.82, 1.0),  # yellow+one
        'cyan or one': (0.97, 0.39, 0.56, 0.88, 0.63, 1.0),  # cyan+one
        'green or one': (0.98, 0.52, 0.56, 0.89, 0.94, 1.0),  # green+one
        'blue or one': (0.99, 0.65, 0.66, 0.75, 1.66, 0.94),  # blue+one
        'pink or one': (0.94, 0.38, 0.52, 0.83, 0.83, 1.0),  # pink+one
        'red or one': (0.98, 0.6, 0.57, 0.78, 0.93, 1.0),  # red+one
    }),
    13: ('mnist', True, 'dsvdd', {
        'gray or one': (0.73, 0.0, 0.56, 0.71, 0.85, 0.91),  # gray+one
        'yellow or one': (0.86, 0.0, 0.6, 0.65, 0.82, 1.0),  # yellow+one
        'cyan or one': (0.83, 0.0, 0.61, 0.63, 0.79, 0.99),  # cyan+one
        'green or one': (0.64, 0.0, 0.57, 0.6, 0.69, 1.0),  # green+one
        'blue or one': (0.78, 0.0, 0.68, 0.42, 1.01, 1.0),  # blue+one
        'pink or one': (0.75, 0.0, 0.67, 0.61, 0.85, 0.97),  # pink+one
        'red or one': (0.79, 0.0, 0.62, 0.57, 0.81, 0.99),  # red+one
    }),
    14: ('gtsrb', False, 'bce', {
        '1,2': (0.92, 0.65, 0.51, 0.88, 0.77, 1.0),  # speed limit 30 + 50
        '2,4': (0.88, 0.59, 0.49, 0.86, 0.69, 0.99),  # speed limit 50 + 70
        '4,7': (0.88, 0.57, 0.55, 0.89, 0.42, 0.99),  # speed limit 70 + 100
        '7,8': (0.89, 0.55, 0.49, 0.87, 0.51, 0.99),  # speed limit 100 + 120
        '13,14': (0.99, 0.89, 0.66, 0.81, 2.29, 0.99),  # give way + stop
        '18,25': (0.93, 0.73, 0.43, 0.91, 3.6, 1.0),  # danger + construction warning
        '6,32,41,42': (1.0, 0.9, 0.56, 1.0, 0.24, 0.97),  # all restriction ends signs
        '0,1,2,3,4,5,7,8': (0.99, 0.79, 0.54, 0.96, 0.41, 0.99),  # all speed limit signs
        '33,34,35,36,37,38,39,40': (1.0, 0.93, 0.4, 0.9, 0.64, 0.98),  # all blue signs
        '11,18,19,20,21,22,23,24,25,26,27,28,29,30,31': (0.96, 0.89, 0.38, 0.95, 1.51, 0.99),  # all warning signs
    }),
    15: ('gtsrb', False, 'hsc', {
        '1,2': (0.88, 0.63, 0.31, 0.88, 0.79, 0.96),  # speed limit 30 + 50
        '2,4': (0.89, 0.57, 0.49, 0.85, 1.45, 1.0),  # speed limit 50 + 70
        '4,7': (0.86, 0.56, 0.6, 0.85, 0.69, 0.91),  # speed limit 70 + 100
        '7,8': (0.85, 0.5, 0.66, 0.86, 0.59, 0.95),  # speed limit 100 + 120
        '13,14': (0.98, 0.81, 0.7, 0.83, 1.0, 0.7),  # give way + stop
        '18,25': (0.91, 0.68, 0.32, 0.9, 2.82, 0.97),  # danger + construction warning
        '6,32,41,42': (1.0, 0.93, 0.6, 1.0, 0.21, 0.94),  # all restriction ends signs
        '0,1,2,3,4,5,7,8': (0.96, 0.79, 0.51, 0.95, 0.29, 0.97),  # all speed limit signs
        '33,34,35,36,37,38,39,40': (1.0, 0.94, 0.34, 0.91, 0.38, 1.0),  # all blue signs
        '11,18,19,20,21,22,23,24,25,26,27,28,29,30,31': (0.97, 0.86, 0.33, 0.96, 1.31, 1.0),  # all warning signs
    }),
    16: ('gtsrb', False, 'dsvdd', {
        '1,2': (0.53, 0.06, 0.56, 0.57, 1.07, 0.95),  # speed limit 30 + 50
        '2,4': (0.55, 0.07, 0.6, 0.57, 3.59, 0.87),  # speed limit 50 + 70
        '4,7': (0.56, 0.02, 0.53, 0.63, 0.34, 0.92),  # speed limit 70 + 100
        '7,8': (0.61, 0.04, 0.53, 0.64, 0.28, 0.95),  # speed limit 100 + 120
        '13,14': (0.49, 0.0, 0.46, 0.49, 1.88, 0.98),  # give way + stop
        '18,25': (0.61, 0.02, 0.59, 0.47, 3.04, 0.9),  # danger + construction warning
        '6,32,41,42': (0.7, 0.06, 0.53, 0.69, 0.26, 0.94),  # all restriction ends signs
        '0,1,2,3,4,5,7,8': (0.69, 0.05, 0.57, 0.64, 0.51, 0.98),  # all speed limit signs
        '33,34,35,36,37,38,39,40': (0.51, 0.02, 0.49, 0.64, 0.2, 0.86),  # all blue signs
        '11,18,19,20,21,22,23,24,25,26,27,28,29,30,31': (0.56, 0.01, 0.46, 0.51, 1.93, 1.0),  # all warning signs
    }),
    17: ('mnist', False, 'bce', {
        '0,1': (0.97, 0.51, 0.79, 0.45, 1.0, 0.98),  # zero+one
        '0,2': (0.95, 0.44, 0.82, 0.59, 0.77, 0.95),  # zero+two
        '1,2': (0.94, 0.46, 0.74, 0.4, 1.25, 0.99),  # one+two
        '1,3': (0.95, 0.45, 0.7, 0.56, 1.18, 0.97),  # one+three
        '2,3': (0.97, 0.56, 0.76, 0.79, 0.51, 0.99),  # two+three
        '2,4': (0.89, 0.35, 0.75, 0.42, 0.83, 1.0),  # two+four
        '3,4': (0.91, 0.33, 0.81, 0.58, 0.85, 0.93),  # three+four
        '3,5': (0.95, 0.48, 0.74, 0.67, 0.43, 0.95),  # three+five
        '4,5': (0.9, 0.3, 0.83, 0.4, 0.92, 0.82),  # four+five
        '4,6': (0.95, 0.57, 0.77, 0.63, 0.67, 0.98),  # four+six
        '5,6': (0.97, 0.6, 0.82, 0.63, 0.55, 0.91),  # five+six
        '5,7': (0.88, 0.4, 0.76, 0.59, 1.02, 0.94),  # five+seven
        '6,7': (0.94, 0.44, 0.85, 0.66, 0.92, 0.82),  # six+seven
        '6,8': (0.95, 0.45, 0.81, 0.63, 0.38, 0.96),  # six+eight
        '7,8': (0.87, 0.33, 0.73, 0.7, 0.9, 0.91),  # seven+eight
        '7,9': (0.95, 0.58, 0.77, 0.88, 0.94, 0.86),  # seven+nine
        '8,9': (0.93, 0.42, 0.8, 0.83, 0.48, 0.93),  # eight+nine
        '0,8': (0.93, 0.39, 0.77, 0.69, 0.46, 0.98),  # eight+zero
        '0,9': (0.95, 0.49, 0.85, 0.77, 0.54, 0.92),  # nine+zero
        '1,9': (0.93, 0.39, 0.73, 0.57, 1.09, 0.97),  # nine+one
    }),
    18: ('mnist', False, 'hsc', {
        '0,1': (0.98, 0.53, 0.88, 0.46, 1.13, 0.92),  # zero+one
        '0,2': (0.95, 0.52, 0.87, 0.39, 0.96, 0.94),  # zero+two
        '1,2': (0.96, 0.48, 0.83, 0.46, 1.23, 0.95),  # one+two
        '1,3': (0.95, 0.51, 0.84, 0.55, 1.24, 0.85),  # one+three
        '2,3': (0.95, 0.58, 0.74, 0.59, 0.73, 0.87),  # two+three
        '2,4': (0.86, 0.33, 0.77, 0.39, 0.92, 0.98),  # two+four
        '3,4': (0.87, 0.34, 0.73, 0.55, 0.87, 0.87),  # three+four
        '3,5': (0.93, 0.5, 0.8, 0.54, 0.54, 0.85),  # three+five
        '4,5': (0.87, 0.33, 0.86, 0.42, 1.35, 0.58),  # four+five
        '4,6': (0.95, 0.55, 0.82, 0.5, 0.82, 0.97),  # four+six
        '5,6': (0.95, 0.57, 0.83, 0.54, 1.03, 0.83),  # five+six
        '5,7': (0.89, 0.4, 0.83, 0.58, 1.33, 0.8),  # five+seven
        '6,7': (0.92, 0.43, 0.81, 0.54, 1.02, 0.87),  # six+seven
        '6,8': (0.94, 0.44, 0.81, 0.51, 0.51, 0.88),  # six+eight
        '7,8': (0.9, 0.42, 0.78, 0.66, 1.14, 0.91),  # seven+eight
        '7,9': (0.96, 0.63, 0.85, 0.81, 1.17, 0.65),  # seven+nine
        '8,9': (0.93, 0.44, 0.83, 0.69, 0.67, 0.87),  # eight+nine
        '0,8': (0.93, 0.44, 0.83, 0.55, 0.8, 0.85),  # eight+zero
        '0,9': (0.94, 0.48, 0.85, 0.61, 0.65, 0.77),  # nine+zero
        '1,9': (0.95, 0.44, 0.83, 0.6, 1.13, 0.92),  # nine+one
    }),
    19: ('mnist', False, 'dsvdd', {
        '0,1': (0.93, 0.0, 0.9, 0.57, 1.05, 0.97),  # zero+one
        '0,2': (0.71, 0.0, 0.7, 0.36, 0.99, 0.54),  # zero+two
        '1,2': (0.73, 0.0, 0.73, 0.38, 1.16, 0.92),  # one+two
        '1,3': (0.77, 0.0, 0.78, 0.43, 1.13, 0.87),  # one+three
        '2,3': (0.69, 0.0, 0.67, 0.38, 0.86, 0.81),  # two+three
        '2,4': (0.85, 0.0, 0.8, 0.39, 0.75, 0.85),  # two+four
        '3,4': (0.77, 0.0, 0.73, 0.46, 0.92, 0.72),  # three+four
        '3,5': (0.66, 0.0, 0.66, 0.43, 0.86, 0.76),  # three+five
        '4,5': (0.71, 0.0, 0.7, 0.41, 0.98, 0.71),  # four+five
        '4,6': (0.81, 0.01, 0.8, 0.37, 1.03, 0.86),  # four+six
        '5,6': (0.72, 0.0, 0.7, 0.41, 0.93, 0.73),  # five+six
        '5,7': (0.72, 0.0, 0.69, 0.44, 0.96, 0.85),  # five+seven
        '6,7': (0.84, 0.0, 0.79, 0.41, 1.13, 0.94),  # six+seven
        '6,8': (0.78, 0.0, 0.75, 0.44, 0.93, 0.79),  # six+eight
        '7,8': (0.7, 0.0, 0.7, 0.39, 1.12, 0.95),  # seven+eight
        '7,9': (0.74, 0.0, 0.75, 0.38, 1.1, 0.72),  # seven+nine
        '8,9': (0.69, 0.0, 0.68, 0.42, 0.95, 0.97),  # eight+nine
        '0,8': (0.66, 0.0, 0.65, 0.37, 1.05, 0.82),  # eight+zero
        '0,9': (0.72, 0.0, 0.67, 0.46, 0.99, 0.65),  # nine+zero
        '1,9': (0.84, 0.0, 0.85, 0.42, 1.13, 0.91),  # nine+one
    }),
    20: ('cifar10', False, 'bce', {
        '0,1': (0.96, 0.79, 0.59, 0.66, 1.04, 0.75),  # airplane+automobile
        '0,2': (0.92, 0.68, 0.45, 0.61, 1.34, 0.88),  # airplane+bird
        '1,2': (0.93, 0.7, 0.57, 0.59, 1.79, 0.73),  # automobile+bird
        '1,3': (0.9, 0.61, 0.46, 0.54, 1.73, 0.87),  # automobile+cat
        '2,3': (0.87, 0.53, 0.35, 0.54, 1.19, 0.81),  # bird+cat
        '2,4': (0.92, 0.64, 0.39, 0.53, 0.92, 0.97),  # bird+deer
        '3,4': (0.9, 0.58, 0.39, 0.53, 0.94, 0.89),  # cat+deer
        '3,5': (0.91, 0.59, 0.3, 0.58, 0.91, 0.81),  # cat+dog
        '4,5': (0.92, 0.64, 0.42, 0.55, 0.88, 0.93),  # deer+dog
        '4,6': (0.94, 0.7, 0.49, 0.52, 0.76, 0.82),  # deer+frog
        '5,6': (0.93, 0.67, 0.46, 0.56, 0.93, 0.94),  # dog+frog
        '5,7': (0.95, 0.71, 0.5, 0.58, 1.01, 0.89),  # dog+horse
        '6,7': (0.96, 0.76, 0.55, 0.56, 1.03, 0.81),  # frog+horse
        '6,8': (0.95, 0.76, 0.53, 0.62, 1.06, 0.88),  # frog+ship
        '7,8': (0.97, 0.8, 0.58, 0.61, 0.95, 0.97),  # horse+ship
        '7,9': (0.96, 0.77, 0.56, 0.6, 1.08, 0.87),  # horse+truck
        '8,9': (0.96, 0.77, 0.54, 0.62, 0.78, 0.93),  # ship+truck
        '0,8': (0.97, 0.8, 0.52, 0.71, 0.77, 0.97),  # ship+airplane
        '0,9': (0.95, 0.75, 0.55, 0.61, 0.93, 0.73),  # truck+airplane
        '1,9': (0.98, 0.85, 0.62, 0.6, 0.75, 0.8),  # truck+automobile
    }),
    21: ('cifar10', False, 'hsc', {
        '0,1': (0.96, 0.75, 0.51, 0.54, 2.14, 0.99),  # airplane+automobile
        '0,2': (0.93, 0.67, 0.44, 0.52, 2.21, 1.0),  # airplane+bird
        '1,2': (0.92, 0.66, 0.45, 0.51, 4.12, 1.0),  # automobile+bird
        '1,3': (0.91, 0.62, 0.53, 0.5, 3.1, 1.0),  # automobile+cat
        '2,3': (0.87, 0.47, 0.32, 0.53, 3.34, 1.0),  # bird+cat
        '2,4': (0.92, 0.63, 0.38, 0.54, 3.49, 1.0),  # bird+deer
        '3,4': (0.9, 0.54, 0.35, 0.52, 2.58, 1.0),  # cat+deer
        '3,5': (0.93, 0.59, 0.39, 0.52, 1.97, 1.0),  # cat+dog
        '4,5': (0.92, 0.6, 0.38, 0.52, 2.44, 0.96),  # deer+dog
        '4,6': (0.95, 0.68, 0.42, 0.56, 2.27, 1.0),  # deer+frog
        '5,6': (0.93, 0.63, 0.43, 0.51, 2.53, 1.0),  # dog+frog
        '5,7': (0.96, 0.7, 0.44, 0.52, 3.22, 1.0),  # dog+horse
        '6,7': (0.96, 0.73, 0.48, 0.52, 2.75, 1.0),  # frog+horse
        '6,8': (0.96, 0.75, 0.48, 0.56, 3.29, 1.0),  # frog+ship
        '7,8': (0.96, 0.77, 0.4, 0.53, 1.87, 1.0),  # horse+ship
        '7,9': (0.95, 0.73, 0.5, 0.53, 2.93, 1.0),  # horse+truck
        '8,9': (0.96, 0.76, 0.41, 0.57, 1.73, 0.99),  # ship+truck
        '0,8': (0.97, 0.8, 0.53, 0.55, 1.65, 0.98),  # ship+airplane
        '0,9': (0.95, 0.72, 0.46, 0.53, 1.85, 0.97),  # truck+airplane
        '1,9': (0.99, 0.85, 0.6, 0.53, 1.49, 0.9),  # truck+automobile
    }),
    22: ('cifar10', False, 'dsvdd', {
        '0,1': (0.5, 0.0, 0.48, 0.46, 1.2, 0.84),  # airplane+automobile
        '0,2': (0.49, 0.0, 0.46, 0.49, 1.27, 0.93),  # airplane+bird
        '1,2': (0.49, 0.0, 0.49, 0.49, 1.23, 0.93),  # automobile+bird
        '1,3': (0.5, 0.0, 0.48, 0.47, 1.22, 0.9),  # automobile+cat
        '2,3': (0.53, 0.0, 0.51, 0.5, 1.08, 0.98),  # bird+cat
        '2,4': (0.56, 0.0, 0.54, 0.51, 0.97, 0.97),  # bird+deer
        '3,4': (0.56, 0.0, 0.54, 0.53, 1.02, 0.95),  # cat+deer
        '3,5': (0.52, 0.0, 0.49, 0.49, 1.06, 0.91),  # cat+dog
        '4,5': (0.55, 0.0, 0.51, 0.53, 1.1, 0.89),  # deer+dog
        '4,6': (0.57, 0.01, 0.53, 0.59, 0.87, 0.93),  # deer+frog
        '5,6': (0.6, 0.0, 0.6, 0.53, 0.95, 0.87),  # dog+frog
        '5,7': (0.53, 0.0, 0.49, 0.49, 1.17, 0.92),  # dog+horse
        '6,7': (0.6, 0.01, 0.56, 0.57, 1.07, 0.99),  # frog+horse
        '6,8': (0.52, 0.0, 0.5, 0.53, 1.08, 0.97),  # frog+ship
        '7,8': (0.49, 0.0, 0.48, 0.48, 1.17, 0.96),  # horse+ship
        '7,9': (0.5, 0.0, 0.51, 0.46, 1.21, 0.88),  # horse+truck
        '8,9': (0.47, 0.0, 0.49, 0.46, 1.05, 0.96),  # ship+truck
        '0,8': (0.5, 0.0, 0.48, 0.42, 1.1, 0.87),  # ship+airplane
        '0,9': (0.48, 0.0, 0.48, 0.46, 1.15, 0.94),  # truck+airplane
        '1,9': (0.51, 0.0, 0.52, 0.45, 1.06, 0.86),  # truck+automobile
    }),
}

OE_TABLE_1 = {  # OE paper Table 1: mean AuROC over classes and 10 seeds (DSVDD on CIFAR-10 from the literature)
    "cifar10": {"dsvdd": 0.648, "deepsad": 0.945, "hsc": 0.959, "focal": 0.958, "bce": 0.961},
    "imagenet30": {"dsvdd": 0.611, "deepsad": 0.967, "hsc": 0.973, "focal": 0.975, "bce": 0.977},
    "cub": {"dsvdd": 0.590, "deepsad": 0.811, "hsc": 0.832, "focal": 0.835, "bce": 0.841},
    "dtd": {"dsvdd": 0.568, "deepsad": 0.724, "hsc": 0.727, "focal": 0.732, "bce": 0.733},
    "fashion_mnist": {"dsvdd": 0.863, "deepsad": 0.864, "hsc": 0.873, "focal": 0.877, "bce": 0.864},
    "mnist": {"dsvdd": 0.976, "deepsad": 0.976, "hsc": 0.982, "focal": 0.984, "bce": 0.984},
}
OE_PAPER_OE = {"cifar10": "80MTI", "fashion_mnist": "grayscale CIFAR-100", "mnist": "EMNIST"}
# OE paper Table 6 (appendix E): HSC on CIFAR-10 one vs. rest with 80MTI OE, mean AuROC over the classes and
# 10 seeds, by the radial function's h (TrainJob.hsc_radial) and with (natural) or without (none) augmentation.
OE_TABLE_6 = {
    "none": {"l1": 0.906, "l2": 0.923, "l2_squared": 0.891, "pseudo_huber": 0.918},
    "natural": {"l1": 0.925, "l2": 0.941, "l2_squared": 0.945, "pseudo_huber": 0.961},
}

OE_CLASS_TABLES: dict[int, tuple[str, dict[str, dict[str, float]]]] = {
    8: ('cifar10', {
        '0': {'deepsad': 0.942, 'hsc': 0.963, 'focal': 0.959, 'bce': 0.964},  # airplane
        '1': {'deepsad': 0.981, 'hsc': 0.987, 'focal': 0.987, 'bce': 0.988},  # automobile
        '2': {'deepsad': 0.898, 'hsc': 0.927, 'focal': 0.923, 'bce': 0.93},  # bird
        '3': {'deepsad': 0.874, 'hsc': 0.898, 'focal': 0.888, 'bce': 0.9},  # cat
        '4': {'deepsad': 0.95, 'hsc': 0.966, 'focal': 0.966, 'bce': 0.971},  # deer
        '5': {'deepsad': 0.93, 'hsc': 0.942, 'focal': 0.941, 'bce': 0.942},  # dog
        '6': {'deepsad': 0.969, 'hsc': 0.979, 'focal': 0.978, 'bce': 0.98},  # frog
        '7': {'deepsad': 0.968, 'hsc': 0.976, 'focal': 0.976, 'bce': 0.976},  # horse
        '8': {'deepsad': 0.971, 'hsc': 0.982, 'focal': 0.98, 'bce': 0.981},  # ship
        '9': {'deepsad': 0.962, 'hsc': 0.974, 'focal': 0.975, 'bce': 0.977},  # truck
    }),
    10: ('fashion_mnist', {
        '0': {'dsvdd': 0.828, 'deepsad': 0.852, 'hsc': 0.835, 'focal': 0.786, 'bce': 0.753},  # top
        '1': {'dsvdd': 0.948, 'deepsad': 0.961, 'hsc': 0.981, 'focal': 0.959, 'bce': 0.935},  # trouser
        '2': {'dsvdd': 0.793, 'deepsad': 0.824, 'hsc': 0.836, 'focal': 0.889, 'bce': 0.894},  # pullover
        '3': {'dsvdd': 0.888, 'deepsad': 0.881, 'hsc': 0.88, 'focal': 0.845, 'bce': 0.826},  # dress
        '4': {'dsvdd': 0.829, 'deepsad': 0.841, 'hsc': 0.857, 'focal': 0.862, 'bce': 0.831},  # coat
        '5': {'dsvdd': 0.751, 'deepsad': 0.912, 'hsc': 0.905, 'focal': 0.927, 'bce': 0.917},  # sandal
        '6': {'dsvdd': 0.755, 'deepsad': 0.73, 'hsc': 0.745, 'focal': 0.784, 'bce': 0.747},  # shirt
        '7': {'dsvdd': 0.966, 'deepsad': 0.96, 'hsc': 0.971, 'focal': 0.951, 'bce': 0.95},  # sneaker
        '8': {'dsvdd': 0.889, 'deepsad': 0.759, 'hsc': 0.783, 'focal': 0.88, 'bce': 0.894},  # bag
        '9': {'dsvdd': 0.982, 'deepsad': 0.916, 'hsc': 0.94, 'focal': 0.889, 'bce': 0.898},  # ankle boot
    }),
    11: ('mnist', {
        '0': {'dsvdd': 0.99, 'deepsad': 0.993, 'hsc': 0.996, 'focal': 0.994, 'bce': 0.994},  # zero
        '1': {'dsvdd': 0.998, 'deepsad': 0.997, 'hsc': 0.999, 'focal': 0.997, 'bce': 0.993},  # one
        '2': {'dsvdd': 0.923, 'deepsad': 0.98, 'hsc': 0.98, 'focal': 0.976, 'bce': 0.975},  # two
        '3': {'dsvdd': 0.949, 'deepsad': 0.986, 'hsc': 0.985, 'focal': 0.995, 'bce': 0.996},  # three
        '4': {'dsvdd': 0.944, 'deepsad': 0.965, 'hsc': 0.967, 'focal': 0.975, 'bce': 0.982},  # four
        '5': {'dsvdd': 0.942, 'deepsad': 0.976, 'hsc': 0.978, 'focal': 0.979, 'bce': 0.973},  # five
        '6': {'dsvdd': 0.99, 'deepsad': 0.996, 'hsc': 0.996, 'focal': 0.997, 'bce': 0.997},  # six
        '7': {'dsvdd': 0.966, 'deepsad': 0.971, 'hsc': 0.974, 'focal': 0.976, 'bce': 0.977},  # seven
        '8': {'dsvdd': 0.909, 'deepsad': 0.935, 'hsc': 0.966, 'focal': 0.973, 'bce': 0.973},  # eight
        '9': {'dsvdd': 0.969, 'deepsad': 0.963, 'hsc': 0.976, 'focal': 0.978, 'bce': 0.977},  # nine
    }),
    17: ('cifar10', {
        # anomaly = airplane
        '1,2,3,4,5,6,7,8,9': {'dsvdd': 0.623, 'deepsad': 0.855, 'hsc': 0.87, 'focal': 0.884, 'bce': 0.879},
        # anomaly = automobile
        '0,2,3,4,5,6,7,8,9': {'dsvdd': 0.527, 'deepsad': 0.856, 'hsc': 0.872, 'focal': 0.899, 'bce': 0.903},
        # anomaly = bird
        '0,1,3,4,5,6,7,8,9': {'dsvdd': 0.542, 'deepsad': 0.836, 'hsc': 0.838, 'focal': 0.862, 'bce': 0.86},
        # anomaly = cat
        '0,1,2,4,5,6,7,8,9': {'dsvdd': 0.396, 'deepsad': 0.824, 'hsc': 0.824, 'focal': 0.834, 'bce': 0.841},
        # anomaly = deer
        '0,1,2,3,5,6,7,8,9': {'dsvdd': 0.566, 'deepsad': 0.756, 'hsc': 0.749, 'focal': 0.769, 'bce': 0.77},
        # anomaly = dog
        '0,1,2,3,4,6,7,8,9': {'dsvdd': 0.499, 'deepsad': 0.827, 'hsc': 0.828, 'focal': 0.841, 'bce': 0.846},
        # anomaly = frog
        '0,1,2,3,4,5,7,8,9': {'dsvdd': 0.532, 'deepsad': 0.851, 'hsc': 0.855, 'focal': 0.861, 'bce': 0.864},
        # anomaly = horse
        '0,1,2,3,4,5,6,8,9': {'dsvdd': 0.477, 'deepsad': 0.852, 'hsc': 0.859, 'focal': 0.884, 'bce': 0.882},
        # anomaly = ship
        '0,1,2,3,4,5,6,7,9': {'dsvdd': 0.547, 'deepsad': 0.897, 'hsc': 0.907, 'focal': 0.913, 'bce': 0.92},
        # anomaly = truck
        '0,1,2,3,4,5,6,7,8': {'dsvdd': 0.511, 'deepsad': 0.867, 'hsc': 0.88, 'focal': 0.889, 'bce': 0.892},
    }),
}

# OE paper, the CLIP columns (zero-shot clip, fine-tuned bce_cl; ViT-B/32): per-class Tables 12 (CIFAR-10),
# 13 (Fashion-MNIST), 15 (MNIST) of the one vs. rest benchmark and Table 17 (CIFAR-10 leave-one-class-out).
OE_CLIP_TABLES: dict[int, tuple[str, dict[str, dict[str, float]]]] = {
    12: ('cifar10', {
        '0': {'clip': 0.994, 'bce_cl': 0.9974},  # airplane
        '1': {'clip': 0.9937, 'bce_cl': 0.9982},  # automobile
        '2': {'clip': 0.9737, 'bce_cl': 0.9929},  # bird
        '3': {'clip': 0.9699, 'bce_cl': 0.9886},  # cat
        '4': {'clip': 0.9805, 'bce_cl': 0.9962},  # deer
        '5': {'clip': 0.9736, 'bce_cl': 0.9926},  # dog
        '6': {'clip': 0.9805, 'bce_cl': 0.9989},  # frog
        '7': {'clip': 0.9899, 'bce_cl': 0.9984},  # horse
        '8': {'clip': 0.9971, 'bce_cl': 0.9986},  # ship
        '9': {'clip': 0.993, 'bce_cl': 0.999},  # truck
    }),
    13: ('fashion_mnist', {
        '0': {'clip': 0.829, 'bce_cl': 0.847},  # top
        '1': {'clip': 0.877, 'bce_cl': 0.985},  # trouser
        '2': {'clip': 0.916, 'bce_cl': 0.938},  # pullover
        '3': {'clip': 0.87, 'bce_cl': 0.97},  # dress
        '4': {'clip': 0.918, 'bce_cl': 0.918},  # coat
        '5': {'clip': 0.787, 'bce_cl': 0.993},  # sandal
        '6': {'clip': 0.813, 'bce_cl': 0.849},  # shirt
        '7': {'clip': 0.973, 'bce_cl': 0.978},  # sneaker
        '8': {'clip': 0.924, 'bce_cl': 0.996},  # bag
        '9': {'clip': 0.991, 'bce_cl': 0.994},  # ankle boot
    }),
    15: ('mnist', {
        '0': {'clip': 0.738, 'bce_cl': 0.982},  # zero
        '1': {'clip': 0.383, 'bce_cl': 0.996},  # one
        '2': {'clip': 0.698, 'bce_cl': 0.896},  # two
        '3': {'clip': 0.852, 'bce_cl': 0.994},  # three
        '4': {'clip': 0.648, 'bce_cl': 0.984},  # four
        '5': {'clip': 0.494, 'bce_cl': 0.966},  # five
        '6': {'clip': 0.247, 'bce_cl': 0.885},  # six
        '7': {'clip': 0.779, 'bce_cl': 0.978},  # seven
        '8': {'clip': 0.4, 'bce_cl': 0.956},  # eight
        '9': {'clip': 0.661, 'bce_cl': 0.969},  # nine
    }),
    17: ('cifar10', {  # the key holds the nine normal classes; the comment names the anomaly
        '1,2,3,4,5,6,7,8,9': {'clip': 0.962, 'bce_cl': 0.992},  # airplane
        '0,2,3,4,5,6,7,8,9': {'clip': 0.96, 'bce_cl': 0.993},  # automobile
        '0,1,3,4,5,6,7,8,9': {'clip': 0.935, 'bce_cl': 0.979},  # bird
        '0,1,2,4,5,6,7,8,9': {'clip': 0.905, 'bce_cl': 0.979},  # cat
        '0,1,2,3,5,6,7,8,9': {'clip': 0.795, 'bce_cl': 0.966},  # deer
        '0,1,2,3,4,6,7,8,9': {'clip': 0.906, 'bce_cl': 0.979},  # dog
        '0,1,2,3,4,5,7,8,9': {'clip': 0.94, 'bce_cl': 0.983},  # frog
        '0,1,2,3,4,5,6,8,9': {'clip': 0.934, 'bce_cl': 0.986},  # horse
        '0,1,2,3,4,5,6,7,9': {'clip': 0.978, 'bce_cl': 0.994},  # ship
        '0,1,2,3,4,5,6,7,8': {'clip': 0.9, 'bce_cl': 0.99},  # truck
    }),
}


def canonical_normal(normal: str | int) -> str:
    """"7" and 7 -> "7"; "1,0" and "0+1" -> "0,1"; "Red + one" -> "red or one"."""
    text = str(normal).strip().lower()
    parts = [p.strip() for p in re.split(r"[,+]", text)]
    if all(p.isdigit() for p in parts):
        return ",".join(str(i) for i in sorted({int(p) for p in parts}))
    return " ".join(text.replace("+", " or ").replace(",", " or ").split())


def ce_paper(dataset: str, colored: bool, detector: str, normal: str | int) -> tuple[dict[str, float], str] | None:
    """The CE paper's per-scenario means (COLUMNS) and their table, or None without a matching row."""
    key = canonical_normal(normal)
    for number, (ds, col, det, rows) in CE_TABLES.items():
        if (ds, col, det) == (dataset, colored, detector) and key in rows:
            return dict(zip(COLUMNS, rows[key])), f"CE paper Table {number}"
    legacy = paper_figures(dataset, colored, detector, normal)
    return (legacy, "CE paper appendix G") if legacy else None


def oe_class_paper(dataset: str, detector: str, normal: str | int) -> tuple[float, str] | None:
    """The OE paper's per-class AuROC (one vs. rest, or leave-one-class-out), or None."""
    key = canonical_normal(normal)
    for number, (ds, rows) in [*OE_CLASS_TABLES.items(), *OE_CLIP_TABLES.items()]:
        if ds == dataset and detector in rows.get(key, {}):
            return rows[key][detector], f"OE paper Table {number}"
    return None


def oe_table1_paper(dataset: str, detector: str) -> float | None:
    """The OE paper's Table 1 mean AuROC (all OE samples), or None."""
    return OE_TABLE_1.get(dataset, {}).get(detector)


def oe_table6_paper(dataset: str, detector: str, radial: str, augment: str) -> float | None:
    """The OE paper's Table 6 mean AuROC of HSC on CIFAR-10 for a radial h and augmentation, or None."""
    if (dataset, detector) != ("cifar10", "hsc"):
        return None
    return OE_TABLE_6.get(augment, {}).get(radial)
