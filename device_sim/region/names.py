"""Name material for the demo county: surnames with their weights, given names, township and
village name parts, mobile prefixes. Data only; drawn from by generate.py."""

from __future__ import annotations

# --- name material ----------------------------------------------------------------------------

# Common surnames, most frequent first; weights fall off roughly as in the national census.
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛"
)
SURNAME_WEIGHTS = tuple(1.0 / (rank + 8) for rank in range(len(SURNAMES)))
# Given names of people born in the 1930s-1950s.
ELDER_GIVEN_FEMALE = (
    "秀英",
    "桂英",
    "玉兰",
    "秀兰",
    "桂兰",
    "凤英",
    "淑珍",
    "翠花",
    "春兰",
    "秀珍",
    "玉珍",
    "桂芳",
    "金花",
    "素芬",
    "兰英",
    "凤兰",
    "秀芳",
    "玉梅",
    "翠兰",
    "桂香",
    "银花",
    "菊英",
)
ELDER_GIVEN_MALE = (
    "建国",
    "德胜",
    "长贵",
    "富贵",
    "国华",
    "明山",
    "文华",
    "有福",
    "永福",
    "玉山",
    "宝山",
    "春生",
    "秋生",
    "树林",
    "金山",
    "德明",
    "世明",
    "忠义",
    "成林",
    "家富",
    "光荣",
    "满堂",
)
SHARE_ELDERS_FEMALE = 0.55  # women live longer
# Aides are mostly village women in their forties and fifties.
AIDE_GIVEN_FEMALE = (
    "红梅",
    "丽娟",
    "海燕",
    "小红",
    "晓燕",
    "春梅",
    "玉霞",
    "秀琴",
    "建英",
    "凤霞",
    "丽萍",
    "艳",
    "静",
    "敏",
    "霞",
    "芳",
    "琴",
    "慧",
)
AIDE_GIVEN_MALE = ("建军", "卫东", "国强", "志刚", "海军", "勇", "伟", "军", "斌", "涛", "明")
SHARE_AIDES_FEMALE = 0.7
# A village called 黄家坪 is mostly 黄: clan villages keep their surname.
SHARE_CLAN_SURNAME = 0.35

TOWNSHIP_FIRST = "青岚龙云茶松桂枫金清凤白石竹柏梅"
TOWNSHIP_SECOND = "溪河潭坪山坝岭湾口"
TOWNSHIP_SUFFIXES = ("镇", "镇", "乡")  # most townships are towns (镇)
VILLAGE_PREFIXES = (
    "柳树",
    "黄家",
    "杨家",
    "马家",
    "陈家",
    "王家",
    "刘家",
    "张家",
    "何家",
    "罗家",
    "茶园",
    "竹园",
    "桃园",
    "松林",
    "枫树",
    "板桥",
    "石门",
    "石板",
    "岩屋",
    "龙潭",
    "龙王",
    "青龙",
    "白果",
    "核桃",
    "椿树",
    "桂花",
    "金竹",
    "银杏",
    "双河",
    "三河",
    "五里",
    "十里",
    "大河",
    "小河",
    "高山",
    "平溪",
    "清水",
    "黄土",
    "红岩",
    "观音",
)
VILLAGE_SUFFIXES = ("坪", "湾", "沟", "坝", "垭", "河", "梁", "口", "岭", "院")

# Mobile prefixes of the three carriers; every phone in the plan is +86 1xx xxxx xxxx.
MOBILE_PREFIXES = (
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "147",
    "150",
    "151",
    "152",
    "157",
    "158",
    "159",
    "178",
    "182",
    "183",
    "184",
    "187",
    "188",
    "198",
    "130",
    "131",
    "132",
    "155",
    "156",
    "166",
    "175",
    "176",
    "185",
    "186",
    "133",
    "153",
    "173",
    "177",
    "180",
    "181",
    "189",
    "191",
    "199",
)
