"""The MQTT seam: the only package that imports paho (address.py names a broker, fastpath.py
holds the patches to paho's internals, client.py the asyncio bridge)."""

from anxin.mqtt.address import BrokerAddress
from anxin.mqtt.client import MqttClient, MqttMessage

__all__ = ["BrokerAddress", "MqttClient", "MqttMessage"]
