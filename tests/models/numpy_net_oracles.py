"""NumPy re-statements of the PyTorch ops used by CUT's networks (test oracles).

Written from the PyTorch definitions (NCHW maths, transcribed to NHWC), not
from psr's code: correlation with explicit zero padding, transposed
convolution as a scatter with `padding` / `output_padding` cropping, the
blur filters of `get_filter`, instance norm with biased variance.
"""

import numpy as np


def conv2d(x, kernel, bias=None, stride=1, zero_padding=0):
    """PyTorch `Conv2d` (cross-correlation). x [B,H,W,Ci], kernel [kh,kw,Ci,Co]."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if zero_padding:
        p = zero_padding
        x = np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)])
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride, :]
            out += window @ kernel[i, j]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def conv_transpose2d(x, kernel, bias=None, stride=2, padding=0, output_padding=0):
    """PyTorch `ConvTranspose2d`: out[s*i + k - padding] += x[i] * w[k].

    kernel [kh, kw, Co, Ci] (Keras layout). The output has
    (H - 1) * s - 2 * padding + kh + output_padding rows.
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    batch, height, width, _ = x.shape
    kh, kw, out_channels, _ = kernel.shape
    full_h = (height - 1) * stride + kh + output_padding
    full_w = (width - 1) * stride + kw + output_padding
    full = np.zeros((batch, full_h, full_w, out_channels))
    for i in range(kh):
        for j in range(kw):
            contribution = x @ kernel[i, j].T
            full[:, i : i + stride * (height - 1) + 1 : stride, j : j + stride * (width - 1) + 1 : stride, :] += (
                contribution
            )
    out_h = (height - 1) * stride - 2 * padding + kh + output_padding
    out_w = (width - 1) * stride - 2 * padding + kw + output_padding
    out = full[:, padding : padding + out_h, padding : padding + out_w, :]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    return out


def binomial_filter(taps):
    taps = np.asarray(taps, np.float64)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


def depthwise(kernel_2d, channels):
    """A [k, k] filter applied to every channel alone, as a dense [k,k,C,C] kernel."""
    dense = np.zeros(kernel_2d.shape + (channels, channels))
    for c in range(channels):
        dense[:, :, c, c] = kernel_2d
    return dense


def blur_down(x):
    """CUT `Downsample(C)`: reflect pad 1, [1,2,1]x[1,2,1]/16 per channel, stride 2."""
    padded = np.pad(np.asarray(x, np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    return conv2d(padded, depthwise(binomial_filter([1, 2, 1]), x.shape[-1]), stride=2)


def blur_up(x):
    """CUT `Upsample(C)` as defined: replicate pad 1, transposed conv of
    4 * [1,3,3,1]x[1,3,3,1]/64 with stride 2 and padding 2, then drop the first
    and last row and column."""
    padded = np.pad(np.asarray(x, np.float64), [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
    kernel = depthwise(binomial_filter([1, 3, 3, 1]) * 4.0, x.shape[-1])
    full = conv_transpose2d(padded, kernel, stride=2, padding=2)
    return full[:, 1:-1, 1:-1, :]


def instance_norm(x, eps=1e-5):
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def reflect_pad(x, p):
    return np.pad(np.asarray(x, np.float64), [(0, 0), (p, p), (p, p), (0, 0)], mode="reflect")


def relu(x):
    return np.maximum(x, 0.0)


def leaky_relu(x, slope=0.2):
    return np.where(x > 0, x, slope * x)
