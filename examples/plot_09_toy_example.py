"""
# The toy example

The B-cos paper's Figure 2 (B-cos v1): one unit with a 2-d weight and three clusters of points, one class
and two groups of negatives. With B = 1 (a linear unit) the optimal weight does not point at the class; the
larger B, the closer the optimal weight aligns with the class direction. This is the alignment pressure that
makes B-cos weights interpretable ([algorithms](../../algorithms.md)). On the command line: `alignnet toy`.
"""

from alignnet.toy import make_toy_data, toy_experiment, toy_figure

data = make_toy_data()
result = toy_experiment(data, bs=(1.0, 2.0, 50.0), n_angles=361)
for b, angle in result.optimum.items():
    print(f"B={b:g}: optimal weight at {angle:6.1f} degrees (class at {result.class_angle:g})")
fig = toy_figure(result, data)
