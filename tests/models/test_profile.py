"""MACs / parameter counts of spec compression §3.7, and `main.py profile`."""

from pathlib import Path

import pytest

from psr.cli import main
from psr.errors import ConfigError
from psr.models.profile import (
    Profile,
    format_channel_config,
    mobile_resnet_profile,
    parse_channel_config,
    resnet_generator_profile,
)
from psr.models.resnet_generator import ResnetGenerator

REPO = Path(__file__).resolve().parents[2]

# Spec §3.7 check values: (config, MACs text, params text).
CHECK_VALUES = [
    ("64_64_64_64_64_64_64_64", "18.31G", "1.987M"),
    ("16_16_32_16_16_64_16_24", "2.962G", "0.412M"),
    ("16_16_32_16_32_64_16_16", "2.942G", "0.459M"),
    ("16_16_48_32_32_40_24_16", "4.495G", "0.667M"),
    ("16_48_48_24_40_48_24_24", "5.557G", "0.829M"),
    # §8: the "DCE + hard negatives" row of Table 6.
    ("16_32_32_32_32_32_16_16", "2.960G", "0.450M"),
]


def spec_closed_form_macs(c, side=256):
    """The spec's closed-form MACs expression, typed in as written there."""
    c0, c1, c2, c3, c4, c5, c6, c7 = c
    r = 4 * c2
    h = side
    total = h * h * c0 * 3 * 49 + (h // 2) ** 2 * 2 * c1 * c0 * 9 + (h // 4) ** 2 * 4 * c2 * 2 * c1 * 9
    total += 3 * sum((h // 4) ** 2 * (9 * r + r * hg + 9 * hg + hg * r) for hg in (4 * c3, 4 * c4, 4 * c5))
    total += (h // 2) ** 2 * 2 * c6 * r * 9 + h * h * c7 * 2 * c6 * 9 + h * h * 3 * c7 * 49
    return total


def test_teacher_matches_spec_exactly():
    teacher = resnet_generator_profile()
    assert teacher.params == 11_378_179
    # Hand sum of spec §3.1's layers at 256×256: stem, two downs, 18 block convs, two ups, final.
    hand = (256**2 * 64 * 3 * 49 + 128**2 * 128 * 64 * 9 + 64**2 * 256 * 128 * 9
            + 18 * 64**2 * 256 * 256 * 9 + 128**2 * 128 * 256 * 9 + 256**2 * 64 * 128 * 9
            + 256**2 * 3 * 64 * 49)
    assert teacher.macs == hand == 56_799_264_768
    assert (teacher.macs_text(), teacher.params_text()) == ("56.80G", "11.378M")


@pytest.mark.parametrize("config_text, macs_text, params_text", CHECK_VALUES)
def test_student_check_values(config_text, macs_text, params_text):
    config = parse_channel_config(config_text)
    student = mobile_resnet_profile(config)
    assert student.macs == spec_closed_form_macs(config)
    assert (student.macs_text(), student.params_text()) == (macs_text, params_text)


def test_macs_depend_on_hidden_widths_only_through_their_sum():
    a = mobile_resnet_profile((16, 16, 32, 16, 16, 64, 16, 24))
    b = mobile_resnet_profile((16, 16, 32, 64, 16, 16, 16, 24))
    assert a.macs == b.macs and a.params == b.params


def test_teacher_params_equal_a_built_keras_generator():
    # Independent oracle: Keras' own count of a small CycleGAN-layout generator.
    model = ResnetGenerator(filters=4, num_blocks=2, antialias=False, antialias_up=False, fused=False)
    assert resnet_generator_profile(filters=4, num_blocks=2, image_size=32).params == model.count_params()


def test_odd_sizes_follow_pytorch_arithmetic():
    # 33 → 17 → 9 → up 18 → 36; only the first stem conv sees 33×33.
    got = resnet_generator_profile(filters=1, num_blocks=0, image_size=33, input_channels=1, output_channels=1)
    assert got.macs == 33 * 33 * 49 + 17 * 17 * 2 * 9 + 9 * 9 * 4 * 2 * 9 + 18 * 18 * 2 * 4 * 9 + 36 * 36 * 2 * 9 + 36 * 36 * 49


def test_texts_and_config_strings():
    assert Profile(params=1, macs=999_500_000).macs_text() == "0.9995G"
    assert format_channel_config(parse_channel_config(" 16_16_32_16_16_64_16_24 ")) == "16_16_32_16_16_64_16_24"
    for bad in ("16_16", "a_b_c_d_e_f_g_h", "16_16_32_16_16_64_16_0"):
        with pytest.raises(ConfigError, match="c0_c1|positive integers"):
            parse_channel_config(bad)
    with pytest.raises(ConfigError, match="multiple of 3"):
        mobile_resnet_profile((16,) * 8, num_blocks=4)


def test_cli_profiles_a_config(capsys):
    assert main(["profile", "16_16_32_16_16_64_16_24"]) == 0
    out = capsys.readouterr().out
    assert "411,619 (0.412M)" in out and "2,961,702,912 (2.962G)" in out


def test_cli_profiles_a_teacher_yaml_and_student(tmp_path, capsys):
    spec = tmp_path / "teacher.yaml"
    spec.write_text((REPO / "experiments" / "horse2zebra.yaml").read_text().replace(
        "antialias: true, antialias_up: true", "antialias: false, antialias_up: false"))
    assert main(["profile", str(spec), "--config", "16_16_32_16_16_64_16_24"]) == 0
    out = capsys.readouterr().out
    assert "(11.378M)" in out and "(56.80G)" in out and "(2.962G)" in out


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["profile", "16_16_32"]) == 2
    assert main(["profile", str(REPO / "experiments" / "horse2zebra.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "antialias: false" in err[1]
