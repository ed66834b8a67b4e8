"""Configs as table rows: one shape, the text of a path of configs."""

from __future__ import annotations

from x3dsearch.config import preset
from x3dsearch.tables import SHAPE, config_table, shape_columns


def test_shape_columns_name_the_config_s_shape() -> None:
    s = preset("S")
    assert shape_columns(s) == {"frames x stride": f"{s.frames}x{s.stride}", "crop": s.crop, "γw": s.width,
                                "γb": s.bottleneck, "γd": s.depth}
    assert tuple(shape_columns(s)) == SHAPE


def test_config_table_aligns_headers_with_their_values() -> None:
    xs = preset("XS")
    text = config_table(f"{'step':>4}  {'axis':<22}", [(f"{'1':>4}  {'width':<22}", xs, 0.6053, "41.2%"),
                                                       (f"{'2':>4}  {'depth':<22}", xs, 1.25, "-")])
    head, first, second = text.splitlines()
    assert head == (f"{'step':>4}  {'axis':<22}{'frames x stride':>16}{'crop':>6}{'γw':>7}{'γb':>7}{'γd':>7}"
                    f"{'GFLOPs':>10}{'proxy top1':>12}")
    assert first == (f"{'1':>4}  {'width':<22}{f'{xs.frames}x{xs.stride}':>16}{xs.crop:>6}{xs.width:>7.3g}"
                     f"{xs.bottleneck:>7.3g}{xs.depth:>7.3g}{0.6053:>10.4f}{'41.2%':>12}")
    assert len(head) == len(first) == len(second) and second.endswith(f"{1.25:>10.4f}{'-':>12}")


def test_config_table_takes_other_formats() -> None:
    text = config_table("p ", [("S ", preset("S"), 1.96, 3_794_322)], "params", factors=">6g", gflops=">10.3f",
                        last_format=">12,")
    assert text.splitlines()[0].endswith(f"{'γd':>6}{'GFLOPs':>10}{'params':>12}")
    assert text.splitlines()[1].endswith(f"{1.96:>10.3f}{'3,794,322':>12}")
